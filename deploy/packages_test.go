package deploy

import (
	"bytes"
	"compress/gzip"
	"io"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/rarp-announce/rarp-announce/internal/netnstest"
)

// The version the package tests build with, as "git describe" would print
// it after a tag, and the package version make derives from it.
const (
	testVersion    = "1.2.3-4-gabcdef0"
	testRevision   = "abcdef0123456789abcdef0123456789abcdef01"
	testPkgVersion = "1.2.3+4.gabcdef0"
)

var (
	buildDir     string // removed by TestMain
	buildDirOnce sync.Once
	buildDirErr  error
	packagesOnce sync.Once
	packagesErr  error
	packagesLog  []byte
)

func TestMain(m *testing.M) {
	code := m.Run()
	if buildDir != "" {
		os.RemoveAll(buildDir)
	}
	os.Exit(code)
}

// useBuildDir creates buildDir, shared by the tests that run make.
func useBuildDir(t *testing.T) {
	t.Helper()
	buildDirOnce.Do(func() { buildDir, buildDirErr = os.MkdirTemp("", "rarp-deploy-test-") })
	if buildDirErr != nil {
		t.Fatal(buildDirErr)
	}
}

// makeIn runs make in the repository root with the test's version and the
// binary in buildDir.
func makeIn(target string, vars ...string) ([]byte, error) {
	args := append([]string{"-C", "..", target,
		"VERSION=" + testVersion, "REVISION=" + testRevision,
		"BIN=" + filepath.Join(buildDir, "rarp-announce")}, vars...)
	cmd := exec.Command("make", args...)
	cmd.Env = append(os.Environ(), "PATH="+os.Getenv("PATH")+":/usr/local/go/bin")
	return cmd.CombinedOutput()
}

// packages runs "make packages" once for all tests and returns the .deb and
// .rpm it wrote.
func packages(t *testing.T) (deb, rpm string) {
	t.Helper()
	netnstest.RequireTools(t, "make", "gzip")
	useBuildDir(t)
	packagesOnce.Do(func() {
		packagesLog, packagesErr = makeIn("packages", "DIST="+filepath.Join(buildDir, "dist"))
	})
	if packagesErr != nil {
		t.Fatalf("make packages: %v\n%s", packagesErr, packagesLog)
	}
	dist := filepath.Join(buildDir, "dist")
	deb = filepath.Join(dist, "rarp-announce_"+testPkgVersion+"-1_amd64.deb")
	rpm = filepath.Join(dist, "rarp-announce-"+testPkgVersion+"-1.x86_64.rpm")
	for _, f := range []string{deb, rpm} {
		if _, err := os.Stat(f); err != nil {
			entries, _ := os.ReadDir(dist)
			t.Fatalf("make packages did not write %s (dist: %v)\n%s", f, entries, packagesLog)
		}
	}
	return deb, rpm
}

// packaged are the files both packages carry besides the unit, with modes.
var packaged = map[string]os.FileMode{
	"/usr/bin/rarp-announce":                                               0o755,
	"/etc/rarp-announce/rarp-announce.yaml":                                0o644,
	"/usr/lib/sysusers.d/rarp-announce.conf":                               0o644,
	"/usr/share/man/man8/rarp-announce.8.gz":                               0o644,
	"/usr/share/doc/rarp-announce/examples/no-fdb-repair.conf":             0o644,
	"/usr/share/doc/rarp-announce/examples/ovs.conf":                       0o644,
	"/usr/share/doc/rarp-announce/examples/rarp-announce-libvirt.sysusers": 0o644,
	"/usr/share/doc/rarp-announce/deploy.md":                               0o644,
	"/usr/share/rarp-announce/prometheus/rarp-announce-rules.yaml":         0o644,
	"/usr/share/rarp-announce/grafana/rarp-announce.json":                  0o644,
	"/usr/share/doc/rarp-announce/CHANGELOG.md":                            0o644,
}

// packagedCopies are packaged files that must be byte for byte the
// repository's.
var packagedCopies = map[string]string{
	"/usr/share/rarp-announce/prometheus/rarp-announce-rules.yaml": "prometheus/rarp-announce-rules.yaml",
	"/usr/share/rarp-announce/grafana/rarp-announce.json":          "../dashboards/rarp-announce.json",
	"/usr/share/doc/rarp-announce/deploy.md":                       "../docs/deploy.md",
	"/usr/share/doc/rarp-announce/CHANGELOG.md":                    "../CHANGELOG.md",
}

// The license files, where each packaging system puts them: Debian's
// machine-readable copyright file in the package's doc directory (policy
// 12.5), RPM's %license files under /usr/share/licenses.
var (
	debLicenses = map[string]string{"/usr/share/doc/rarp-announce/copyright": "packaging/copyright"}
	rpmLicenses = map[string]string{
		"/usr/share/licenses/rarp-announce/LICENSE":   "../LICENSE",
		"/usr/share/licenses/rarp-announce/copyright": "packaging/copyright",
	}
)

const configPath = "/etc/rarp-announce/rarp-announce.yaml"

func checkManPage(t *testing.T, gz []byte) {
	t.Helper()
	zr, err := gzip.NewReader(bytes.NewReader(gz))
	if err != nil {
		t.Fatalf("man page: %v", err)
	}
	page, err := io.ReadAll(zr)
	if err != nil {
		t.Fatalf("man page: %v", err)
	}
	if src := []byte(readFile(t, "man/rarp-announce.8")); !bytes.Equal(page, src) {
		t.Error("the packaged man page differs from deploy/man/rarp-announce.8")
	}
}

// TestManPageRenders checks the hand-written man page with groff's
// warnings on (what lintian's manpage checks run).
func TestManPageRenders(t *testing.T) {
	netnstest.RequireTools(t, "groff")
	out, err := exec.Command("groff", "-man", "-ww", "-z", "-Tutf8", "man/rarp-announce.8").CombinedOutput()
	if err != nil || len(out) > 0 {
		t.Fatalf("groff: %v\n%s", err, out)
	}
	page := readFile(t, "man/rarp-announce.8")
	for _, want := range []string{".TH RARP-ANNOUNCE 8", "/etc/rarp-announce/rarp-announce.yaml", "CAP_NET_RAW", "SIGHUP", "/readyz"} {
		if !strings.Contains(page, want) {
			t.Errorf("man page lacks %q", want)
		}
	}
}

// TestRPMPackage reads the .rpm with the reader in rpmread_test.go (rpm(8)
// need not be installed): metadata, file list, modes, owners, the config
// file marked %config(noreplace), scripts, and payload contents.
func TestRPMPackage(t *testing.T) {
	_, rpmPath := packages(t)
	p, err := readRPM(rpmPath)
	if err != nil {
		t.Fatalf("%s: %v", rpmPath, err)
	}
	for tag, want := range map[int32]string{rpmTagName: "rarp-announce", rpmTagVersion: testPkgVersion, rpmTagRelease: "1", rpmTagArch: "x86_64"} {
		if got := p.str(tag); got != want {
			t.Errorf("tag %d = %q, want %q", tag, got, want)
		}
	}
	files := map[string]os.FileMode{"/usr/lib/systemd/system/rarp-announce.service": 0o644}
	for f, m := range packaged {
		files[f] = m
	}
	for f := range rpmLicenses {
		files[f] = 0o644
	}
	var names []string
	for name, f := range p.Files {
		if !f.Mode.IsDir() {
			names = append(names, name)
		}
	}
	slices.Sort(names)
	t.Logf("%s files: %v", filepath.Base(rpmPath), names)
	if len(names) != len(files) {
		t.Errorf("rpm has %d files, want %d: %v", len(names), len(files), names)
	}
	for name, mode := range files {
		f := p.Files[name]
		if f == nil {
			t.Errorf("rpm lacks %s", name)
			continue
		}
		if f.Mode != mode || f.User != "root" || f.Group != "root" {
			t.Errorf("%s: %v %s:%s, want %v root:root", name, f.Mode, f.User, f.Group, mode)
		}
		config := f.Flags&(rpmFileConfig|rpmFileNoReplace) == rpmFileConfig|rpmFileNoReplace
		if config != (name == configPath) {
			t.Errorf("%s: %%config(noreplace) = %v", name, config)
		}
	}
	bin, err := os.ReadFile(filepath.Join(buildDir, "rarp-announce"))
	if err != nil {
		t.Fatal(err)
	}
	if f := p.Files["/usr/bin/rarp-announce"]; f != nil && !bytes.Equal(f.Data, bin) {
		t.Errorf("/usr/bin/rarp-announce in the rpm (%d bytes) is not the built binary (%d bytes)", len(f.Data), len(bin))
	}
	if f := p.Files["/usr/lib/systemd/system/rarp-announce.service"]; f != nil && string(f.Data) != readFile(t, unitPath) {
		t.Error("the rpm's unit differs from " + unitPath)
	}
	if f := p.Files["/usr/share/man/man8/rarp-announce.8.gz"]; f != nil {
		checkManPage(t, f.Data)
	}
	for dst, src := range packagedCopies {
		if f := p.Files[dst]; f != nil && string(f.Data) != readFile(t, src) {
			t.Errorf("%s in the rpm differs from %s", dst, src)
		}
	}
	for dst, src := range rpmLicenses {
		if f := p.Files[dst]; f != nil && string(f.Data) != readFile(t, src) {
			t.Errorf("%s in the rpm differs from %s", dst, src)
		}
	}
	if got := p.str(rpmTagLicense); got != "Apache-2.0" {
		t.Errorf("rpm License tag %q, want Apache-2.0", got)
	}
	for tag, want := range map[int32]string{rpmTagPostin: "systemd-sysusers", rpmTagPreun: "disable --now"} {
		if s := p.str(tag); !strings.Contains(s, want) {
			t.Errorf("script tag %d lacks %q:\n%s", tag, want, s)
		}
	}
}

func run(t *testing.T, name string, args ...string) string {
	t.Helper()
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return string(out)
}

func exists(lookup func() error) bool { return lookup() == nil }

// TestDebPackageInstalls installs the .deb into this machine with dpkg, as
// an operator would, and checks the result: files, the binary's version,
// the user and its libvirt group, the unit verifying in place, the config
// file surviving a reinstall, and a clean purge.
func TestDebPackageInstalls(t *testing.T) {
	netnstest.Require(t, "dpkg", "dpkg-deb", "systemd-analyze", "getcap", "userdel", "groupdel")
	if exec.Command("dpkg", "-s", "rarp-announce").Run() == nil {
		t.Fatal("a rarp-announce package is installed on this machine: the test would replace it; remove it first")
	}
	debPath, _ := packages(t)

	// Leave the machine as it was: the package keeps its user on purge
	// (Debian practice), the test does not.
	hadUser := exists(func() error { _, err := user.Lookup("rarp-announce"); return err })
	hadGroup := exists(func() error { _, err := user.LookupGroup("rarp-announce"); return err })
	hadLibvirt := exists(func() error { _, err := user.LookupGroup("libvirt"); return err })
	t.Cleanup(func() {
		_ = exec.Command("dpkg", "--purge", "rarp-announce").Run()
		if !hadUser {
			_ = exec.Command("userdel", "rarp-announce").Run()
		}
		if !hadGroup {
			_ = exec.Command("groupdel", "rarp-announce").Run()
		}
		if !hadLibvirt {
			_ = exec.Command("groupdel", "libvirt").Run()
		}
	})

	info := run(t, "dpkg-deb", "--info", debPath)
	for _, want := range []string{"Package: rarp-announce", "Version: " + testPkgVersion + "-1", "Architecture: amd64"} {
		if !strings.Contains(info, want) {
			t.Errorf("dpkg-deb --info lacks %q:\n%s", want, info)
		}
	}
	t.Logf("dpkg-deb --contents %s:\n%s", filepath.Base(debPath), run(t, "dpkg-deb", "--contents", debPath))

	t.Logf("dpkg -i: %s", run(t, "dpkg", "-i", debPath))
	files := map[string]os.FileMode{"/lib/systemd/system/rarp-announce.service": 0o644}
	for f, m := range packaged {
		files[f] = m
	}
	for f := range debLicenses {
		files[f] = 0o644
	}
	for name, mode := range files {
		st, err := os.Stat(name)
		if err != nil {
			t.Errorf("after dpkg -i: %v", err)
			continue
		}
		if st.Mode().Perm() != mode {
			t.Errorf("%s: mode %v, want %v", name, st.Mode().Perm(), mode)
		}
	}
	if got := strings.Fields(run(t, "dpkg-query", "-W", "-f=${Conffiles}", "rarp-announce")); len(got) == 0 || got[0] != configPath {
		t.Errorf("conffiles = %v, want %s", got, configPath)
	}
	gz, err := os.ReadFile("/usr/share/man/man8/rarp-announce.8.gz")
	if err == nil {
		checkManPage(t, gz)
	}
	for _, copies := range []map[string]string{packagedCopies, debLicenses} {
		for dst, src := range copies {
			if b, err := os.ReadFile(dst); err == nil && string(b) != readFile(t, src) {
				t.Errorf("installed %s differs from %s", dst, src)
			}
		}
	}

	out := run(t, "/usr/bin/rarp-announce", "version")
	if !strings.HasPrefix(out, "rarp-announce "+testVersion+" (revision "+testRevision) {
		t.Errorf("rarp-announce version = %q, want version %s revision %s", out, testVersion, testRevision)
	}
	// Capabilities come from the unit only: file capabilities on a host
	// binary would hand them to every local user.
	if caps := strings.TrimSpace(run(t, "getcap", "/usr/bin/rarp-announce")); caps != "" {
		t.Errorf("/usr/bin/rarp-announce has file capabilities: %s", caps)
	}

	u, err := user.Lookup("rarp-announce")
	if err != nil {
		t.Fatalf("the package did not create its user: %v", err)
	}
	if u.Uid == "0" {
		t.Fatal("user rarp-announce is root")
	}
	gids, err := u.GroupIds()
	if err != nil {
		t.Fatal(err)
	}
	// The libvirt group (root-equivalent) is an opt-in for the qemu
	// strategy (rarp-announce-libvirt.sysusers), never a default.
	if libvirt, err := user.LookupGroup("libvirt"); err == nil && slices.Contains(gids, libvirt.Gid) {
		t.Errorf("user rarp-announce is in group libvirt by default: groups %v", gids)
	}

	// The unit as installed, with the real binary and man page in place.
	if out, err := exec.Command("systemd-analyze", "verify", "/lib/systemd/system/rarp-announce.service").CombinedOutput(); err != nil || len(bytes.TrimSpace(out)) > 0 {
		t.Errorf("systemd-analyze verify (installed unit): %v\n%s", err, out)
	}

	// The operator's config survives reinstalling (conffile, noreplace).
	edited := readFile(t, configPath) + "# edited by the operator\n"
	if err := os.WriteFile(configPath, []byte(edited), 0o644); err != nil {
		t.Fatal(err)
	}
	run(t, "dpkg", "-i", "--force-confold", debPath)
	if got := readFile(t, configPath); got != edited {
		t.Errorf("reinstall replaced the edited config:\n%s", got)
	}

	// Remove keeps the config, purge removes it.
	run(t, "dpkg", "-r", "rarp-announce")
	if _, err := os.Stat("/usr/bin/rarp-announce"); !os.IsNotExist(err) {
		t.Errorf("after dpkg -r: /usr/bin/rarp-announce: %v", err)
	}
	if _, err := os.Stat(configPath); err != nil {
		t.Errorf("dpkg -r removed the config: %v", err)
	}
	run(t, "dpkg", "--purge", "rarp-announce")
	if _, err := os.Stat(configPath); !os.IsNotExist(err) {
		t.Errorf("after dpkg --purge: %s: %v", configPath, err)
	}
}
