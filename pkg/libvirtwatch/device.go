package libvirtwatch

import "github.com/rarp-announce/rarp-announce/pkg/libvirtconn"

// DeviceChanged events (Event.Kind) tell that a device was hot-plugged
// into or unplugged from a running domain (libvirt's DEVICE_ADDED and
// DEVICE_REMOVED events, libvirtconn.Conn.DeviceEvents): a NIC added or
// removed changes what the agent knows of the domain's NICs. Event and
// Detail are -1; Device names the device by its alias ("net1"),
// DeviceAdded tells which.
func deviceChanged(d libvirtconn.DeviceEvent) Event {
	return Event{Kind: DeviceChanged, Domain: d.Domain, DomainID: d.DomainID, Event: -1, Detail: -1, Device: d.Alias, DeviceAdded: d.Added}
}
