package deploy

import (
	"encoding/json"
	"regexp"
	"slices"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"
)

// TestKollaRecipe checks that the kolla pieces fit together: config.json
// copies the file the command reads from the directory the ansible snippet
// mounts, and the snippet (valid YAML) grants the capabilities and mounts
// the libvirt sockets read-only. kolla itself cannot run here.
func TestKollaRecipe(t *testing.T) {
	var cfg struct {
		Command     string `json:"command"`
		ConfigFiles []struct {
			Source, Dest, Owner, Perm string
		} `json:"config_files"`
	}
	if err := json.Unmarshal([]byte(readFile(t, "kolla/config.json")), &cfg); err != nil {
		t.Fatalf("config.json: %v", err)
	}
	cmd := strings.Fields(cfg.Command)
	if len(cmd) != 4 || cmd[0] != "/usr/bin/rarp-announce" || cmd[1] != "run" || cmd[2] != "--config" {
		t.Fatalf("command %q, want /usr/bin/rarp-announce run --config FILE", cfg.Command)
	}
	// The agent reads the mounted file itself: a copy made at container
	// start would make SIGHUP re-read stale settings.
	if cmd[3] != "/var/lib/kolla/config_files/rarp-announce.yaml" || len(cfg.ConfigFiles) != 0 {
		t.Errorf("command reads %s, config_files %+v: want the mounted /var/lib/kolla/config_files/rarp-announce.yaml and no copy", cmd[3], cfg.ConfigFiles)
	}

	df := readFile(t, "kolla/Dockerfile")
	for _, want := range []string{"ARG KOLLA_BASE_IMAGE=", "FROM ${KOLLA_BASE_IMAGE}", "\nUSER root\n", `CMD ["kolla_start"]`} {
		if !strings.Contains(df, want) {
			t.Errorf("kolla/Dockerfile lacks %q", want)
		}
	}

	blocks := regexp.MustCompile("(?s)```yaml\n(.*?)```").FindAllStringSubmatch(readFile(t, "kolla/README.md"), -1)
	if len(blocks) != 1 {
		t.Fatalf("kolla/README.md: %d yaml blocks, want 1", len(blocks))
	}
	var plays []struct {
		Hosts string `yaml:"hosts"`
		Tasks []struct {
			Name      string `yaml:"name"`
			Container *struct {
				Name    string   `yaml:"name"`
				CapDrop []string `yaml:"cap_drop"`
				CapAdd  []string `yaml:"cap_add"`
				SecOpt  []string `yaml:"security_opt"`
				Volumes []string `yaml:"volumes"`
				Health  struct {
					Test []string `yaml:"test"`
				} `yaml:"healthcheck"`
				Privileged bool `yaml:"privileged"`
			} `yaml:"kolla_container"`
		} `yaml:"tasks"`
	}
	if err := yaml.Unmarshal([]byte(blocks[0][1]), &plays); err != nil {
		t.Fatalf("kolla/README.md ansible snippet: %v", err)
	}
	if len(plays) != 1 || plays[0].Hosts != "compute" {
		t.Fatalf("want one play on the compute group, got %+v", plays)
	}
	found := false
	for _, task := range plays[0].Tasks {
		c := task.Container
		if c == nil {
			continue
		}
		found = true
		if c.Privileged || !slices.Equal(c.CapDrop, []string{"ALL"}) || !slices.Equal(c.CapAdd, []string{"NET_RAW", "NET_ADMIN"}) ||
			!slices.Contains(c.SecOpt, "no-new-privileges") {
			t.Errorf("kolla_container privileged %v cap_drop %v cap_add %v security_opt %v, want unprivileged, ALL dropped but NET_RAW NET_ADMIN, no-new-privileges",
				c.Privileged, c.CapDrop, c.CapAdd, c.SecOpt)
		}
		for _, v := range []string{"/run/libvirt:/run/libvirt:ro", "/run/openvswitch:/run/openvswitch:ro"} {
			if !slices.Contains(c.Volumes, v) {
				t.Errorf("volumes %v lack %s", c.Volumes, v)
			}
		}
		if !slices.ContainsFunc(c.Volumes, func(v string) bool { return strings.HasSuffix(v, ":/var/lib/kolla/config_files/:ro") }) {
			t.Errorf("volumes %v: the config directory is not mounted on /var/lib/kolla/config_files/", c.Volumes)
		}
		if !strings.Contains(strings.Join(c.Health.Test, " "), "127.0.0.1:9798/readyz") {
			t.Errorf("healthcheck %v does not ask /readyz", c.Health.Test)
		}
	}
	if !found {
		t.Error("the snippet has no kolla_container task")
	}
}
