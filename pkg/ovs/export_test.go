package ovs

// Test-only API.

// Version is the OpenFlow version negotiated with bridge (1 = OpenFlow 1.0,
// 4 = 1.3), 0 without a connection.
func (j *OpenFlowInjector) Version(bridge string) uint8 {
	j.mu.Lock()
	defer j.mu.Unlock()
	if p := j.conns[bridge]; p != nil {
		return p.oc.version
	}
	return 0
}
