package deploy

import (
	"bytes"
	"errors"
	"io"
	"regexp"
	"slices"
	"strconv"
	"testing"

	"go.yaml.in/yaml/v3"
)

// The parts of the manifests the test checks; yaml.v3 ignores the rest but
// still fails on malformed YAML and duplicate keys.
type k8sProbe struct {
	HTTPGet struct {
		Host string `yaml:"host"`
		Path string `yaml:"path"`
		Port int    `yaml:"port"`
	} `yaml:"httpGet"`
}

type k8sContainer struct {
	Name            string   `yaml:"name"`
	Image           string   `yaml:"image"`
	Args            []string `yaml:"args"`
	SecurityContext struct {
		Privileged               *bool `yaml:"privileged"`
		AllowPrivilegeEscalation *bool `yaml:"allowPrivilegeEscalation"`
		ReadOnlyRootFilesystem   *bool `yaml:"readOnlyRootFilesystem"`
		RunAsNonRoot             *bool `yaml:"runAsNonRoot"`
		Capabilities             struct {
			Drop []string `yaml:"drop"`
			Add  []string `yaml:"add"`
		} `yaml:"capabilities"`
	} `yaml:"securityContext"`
	LivenessProbe  *k8sProbe `yaml:"livenessProbe"`
	ReadinessProbe *k8sProbe `yaml:"readinessProbe"`
	Resources      struct {
		Requests map[string]string `yaml:"requests"`
		Limits   map[string]string `yaml:"limits"`
	} `yaml:"resources"`
	VolumeMounts []struct {
		Name      string `yaml:"name"`
		MountPath string `yaml:"mountPath"`
		ReadOnly  bool   `yaml:"readOnly"`
	} `yaml:"volumeMounts"`
}

type k8sObject struct {
	APIVersion string `yaml:"apiVersion"`
	Kind       string `yaml:"kind"`
	Metadata   struct {
		Name      string            `yaml:"name"`
		Namespace string            `yaml:"namespace"`
		Labels    map[string]string `yaml:"labels"`
	} `yaml:"metadata"`
	Data map[string]string `yaml:"data"`
	Spec struct {
		Selector struct {
			MatchLabels map[string]string `yaml:"matchLabels"`
		} `yaml:"selector"`
		Template struct {
			Metadata struct {
				Labels map[string]string `yaml:"labels"`
			} `yaml:"metadata"`
			Spec struct {
				HostNetwork     bool   `yaml:"hostNetwork"`
				DNSPolicy       string `yaml:"dnsPolicy"`
				SecurityContext struct {
					RunAsNonRoot   *bool `yaml:"runAsNonRoot"`
					RunAsUser      *int  `yaml:"runAsUser"`
					RunAsGroup     *int  `yaml:"runAsGroup"`
					SeccompProfile struct {
						Type string `yaml:"type"`
					} `yaml:"seccompProfile"`
				} `yaml:"securityContext"`
				Containers []k8sContainer `yaml:"containers"`
				Volumes    []struct {
					Name     string `yaml:"name"`
					HostPath *struct {
						Path string `yaml:"path"`
						Type string `yaml:"type"`
					} `yaml:"hostPath"`
					ConfigMap *struct {
						Name string `yaml:"name"`
					} `yaml:"configMap"`
				} `yaml:"volumes"`
			} `yaml:"spec"`
		} `yaml:"template"`
	} `yaml:"spec"`
}

func decodeAll(t *testing.T, path string) []k8sObject {
	t.Helper()
	dec := yaml.NewDecoder(bytes.NewReader([]byte(readFile(t, path))))
	var objs []k8sObject
	for {
		var o k8sObject
		err := dec.Decode(&o)
		if errors.Is(err, io.EOF) {
			return objs
		}
		if err != nil {
			t.Fatalf("%s: document %d: %v", path, len(objs)+1, err)
		}
		objs = append(objs, o)
	}
}

// imageUser returns the numeric UID:GID of the Dockerfile's USER.
func imageUser(t *testing.T) (uid, gid int) {
	t.Helper()
	m := regexp.MustCompile(`(?m)^USER (\d+):(\d+)$`).FindStringSubmatch(readFile(t, "../Dockerfile"))
	if m == nil {
		t.Fatal("../Dockerfile has no numeric USER uid:gid")
	}
	uid, _ = strconv.Atoi(m[1])
	gid, _ = strconv.Atoi(m[2])
	return uid, gid
}

func TestKubernetesDaemonSet(t *testing.T) {
	objs := decodeAll(t, "kubernetes/daemonset.yaml")
	byKind := map[string]k8sObject{}
	for _, o := range objs {
		byKind[o.Kind] = o
	}
	if len(objs) != 3 || len(byKind) != 3 {
		t.Fatalf("want a Namespace, a ConfigMap and a DaemonSet, got %d objects", len(objs))
	}
	ns, cm, ds := byKind["Namespace"], byKind["ConfigMap"], byKind["DaemonSet"]
	if ds.APIVersion != "apps/v1" || cm.Metadata.Namespace != ns.Metadata.Name || ds.Metadata.Namespace != ns.Metadata.Name {
		t.Errorf("apiVersion %q, namespaces: %q %q %q", ds.APIVersion, ns.Metadata.Name, cm.Metadata.Namespace, ds.Metadata.Namespace)
	}
	// hostNetwork and hostPath need the privileged Pod Security level.
	if ns.Metadata.Labels["pod-security.kubernetes.io/enforce"] != "privileged" {
		t.Error("the namespace does not allow hostNetwork/hostPath pods")
	}
	if got, want := cm.Data["rarp-announce.yaml"], readFile(t, "rarp-announce.yaml"); got != want {
		t.Errorf("the ConfigMap's rarp-announce.yaml differs from deploy/rarp-announce.yaml:\n%s", got)
	}

	tmpl := ds.Spec.Template
	for k, v := range ds.Spec.Selector.MatchLabels {
		if tmpl.Metadata.Labels[k] != v {
			t.Errorf("selector %s=%s does not match the pod template", k, v)
		}
	}
	if len(ds.Spec.Selector.MatchLabels) == 0 {
		t.Error("empty selector")
	}
	pod := tmpl.Spec
	if !pod.HostNetwork || pod.DNSPolicy != "ClusterFirstWithHostNet" {
		t.Errorf("hostNetwork %v dnsPolicy %q, want true ClusterFirstWithHostNet", pod.HostNetwork, pod.DNSPolicy)
	}
	uid, gid := imageUser(t)
	psc := pod.SecurityContext
	if psc.RunAsUser == nil || *psc.RunAsUser != uid || psc.RunAsGroup == nil || *psc.RunAsGroup != gid ||
		psc.SeccompProfile.Type != "RuntimeDefault" {
		t.Errorf("pod securityContext %+v, want runAsUser %d, runAsGroup %d (the image's USER), seccomp RuntimeDefault", psc, uid, gid)
	}
	if uid != 0 {
		t.Errorf("the image's USER is %d: libvirtd refuses a UID unknown to the host's passwd", uid)
	}
	if len(pod.Containers) != 1 {
		t.Fatalf("%d containers, want 1", len(pod.Containers))
	}
	c := pod.Containers[0]
	if !slices.Equal(c.Args, []string{"run", "--config", "/etc/rarp-announce/rarp-announce.yaml"}) {
		t.Errorf("args %v", c.Args)
	}
	sc := c.SecurityContext
	if !slices.Equal(sc.Capabilities.Drop, []string{"ALL"}) || !slices.Equal(sc.Capabilities.Add, []string{"NET_RAW", "NET_ADMIN"}) {
		t.Errorf("capabilities drop %v add %v, want drop [ALL] add [NET_RAW NET_ADMIN]", sc.Capabilities.Drop, sc.Capabilities.Add)
	}
	if sc.Privileged == nil || *sc.Privileged || sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem {
		t.Errorf("container securityContext %+v, want privileged false, readOnlyRootFilesystem", sc)
	}
	// UID 0 gets the added capabilities from the runtime, so no_new_privs
	// can stay on (the MetalLB speaker pattern).
	if sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation {
		t.Error("allowPrivilegeEscalation must be false")
	}
	for _, p := range []struct {
		name  string
		probe *k8sProbe
		path  string
	}{{"liveness", c.LivenessProbe, "/healthz"}, {"readiness", c.ReadinessProbe, "/readyz"}} {
		if p.probe == nil || p.probe.HTTPGet.Path != p.path || p.probe.HTTPGet.Port != 9798 || p.probe.HTTPGet.Host != "127.0.0.1" {
			t.Errorf("%s probe %+v, want GET 127.0.0.1:9798%s", p.name, p.probe, p.path)
		}
	}
	if c.Resources.Requests["cpu"] == "" || c.Resources.Requests["memory"] == "" || c.Resources.Limits["memory"] == "" {
		t.Errorf("resources %+v: want cpu and memory requests and a memory limit", c.Resources)
	}

	mounts := map[string]string{}
	for _, m := range c.VolumeMounts {
		if !m.ReadOnly {
			t.Errorf("volume %s is mounted read-write", m.Name)
		}
		mounts[m.Name] = m.MountPath
	}
	found := 0
	hostPaths := map[string]string{"/run/libvirt": "/run/libvirt", "/run/openvswitch": "/run/openvswitch"}
	for _, v := range pod.Volumes {
		switch {
		case v.HostPath != nil:
			if want, ok := hostPaths[v.HostPath.Path]; !ok || mounts[v.Name] != want {
				t.Errorf("hostPath volume %s: %s mounted at %q, want /run/libvirt or /run/openvswitch at the same path", v.Name, v.HostPath.Path, mounts[v.Name])
			}
			delete(hostPaths, v.HostPath.Path)
			found++
		case v.ConfigMap != nil:
			if v.ConfigMap.Name != cm.Metadata.Name || mounts[v.Name] != "/etc/rarp-announce" {
				t.Errorf("config volume %s: ConfigMap %q at %q, want %q at /etc/rarp-announce", v.Name, v.ConfigMap.Name, mounts[v.Name], cm.Metadata.Name)
			}
			found++
		}
	}
	if found != 3 || len(pod.Volumes) != 3 || len(hostPaths) != 0 {
		t.Errorf("volumes: %d, want the libvirt and OVS socket directories and the config (missing %v)", len(pod.Volumes), hostPaths)
	}
}
