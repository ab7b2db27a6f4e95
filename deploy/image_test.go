package deploy

import (
	"archive/tar"
	"bufio"
	"bytes"
	"compress/gzip"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/rarp-announce/rarp-announce/internal/netnstest"
)

type imageFile struct {
	hdr  *tar.Header
	data []byte
}

// imageFiles reads the layers of an image saved as an OCI directory.
func imageFiles(t *testing.T, dir string) map[string]imageFile {
	t.Helper()
	var index struct {
		Manifests []struct{ Digest string }
	}
	var manifest struct {
		Layers []struct{ Digest string }
	}
	blob := func(digest string) string {
		return filepath.Join(dir, "blobs", strings.ReplaceAll(digest, ":", "/"))
	}
	if err := json.Unmarshal([]byte(readFile(t, filepath.Join(dir, "index.json"))), &index); err != nil || len(index.Manifests) != 1 {
		t.Fatalf("index.json: %v (%d manifests)", err, len(index.Manifests))
	}
	if err := json.Unmarshal([]byte(readFile(t, blob(index.Manifests[0].Digest))), &manifest); err != nil {
		t.Fatalf("manifest: %v", err)
	}
	files := map[string]imageFile{}
	for _, l := range manifest.Layers {
		f, err := os.Open(blob(l.Digest))
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		br := bufio.NewReader(f)
		var r io.Reader = br
		if magic, _ := br.Peek(2); bytes.Equal(magic, []byte{0x1f, 0x8b}) {
			if r, err = gzip.NewReader(br); err != nil {
				t.Fatal(err)
			}
		}
		tr := tar.NewReader(r)
		for {
			hdr, err := tr.Next()
			if err == io.EOF {
				break
			}
			if err != nil {
				t.Fatalf("layer %s: %v", l.Digest, err)
			}
			data, err := io.ReadAll(tr)
			if err != nil {
				t.Fatal(err)
			}
			files["/"+strings.TrimPrefix(strings.TrimPrefix(hdr.Name, "./"), "/")] = imageFile{hdr, data}
		}
	}
	return files
}

// TestContainerImage builds the image's final stage from a host build with
// "make image" (no pull) and checks what a runtime will see: the non-root
// user (UID 0), entrypoint and command, OCI labels with the baked-in
// version, and a layer holding only the binary (no file capabilities) and
// the passwd/group files. test/lab/lab-image.sh runs the image itself.
func TestContainerImage(t *testing.T) {
	netnstest.Require(t, "podman", "make")
	useBuildDir(t)
	image := fmt.Sprintf("localhost/rarp-announce-test:%d", os.Getpid())
	out, err := makeIn("image", "IMAGE="+image, "CREATED=2026-01-02T03:04:05Z")
	t.Cleanup(func() { _ = exec.Command("podman", "rmi", "-f", image).Run() })
	if err != nil {
		t.Fatalf("make image: %v\n%s", err, out)
	}
	if strings.Contains(string(out), "Trying to pull") {
		t.Errorf("make image pulled an image:\n%s", out)
	}

	js := run(t, "podman", "image", "inspect", image)
	var inspect []struct {
		Config struct {
			User       string
			Entrypoint []string
			Cmd        []string
			Labels     map[string]string
		}
	}
	if err := json.Unmarshal([]byte(js), &inspect); err != nil || len(inspect) != 1 {
		t.Fatalf("podman image inspect: %v\n%s", err, js)
	}
	c := inspect[0].Config
	t.Logf("image %s: user %s, entrypoint %v, cmd %v, labels %v", image, c.User, c.Entrypoint, c.Cmd, c.Labels)
	// UID 0 bounded by the runtime's capabilities (Dockerfile): libvirtd
	// refuses a UID the host's passwd does not know.
	if c.User != "0:0" {
		t.Errorf("User = %q, want 0:0", c.User)
	}
	if !slices.Equal(c.Entrypoint, []string{"/usr/bin/rarp-announce"}) || !slices.Equal(c.Cmd, []string{"run"}) {
		t.Errorf("Entrypoint %v Cmd %v, want [/usr/bin/rarp-announce] [run]", c.Entrypoint, c.Cmd)
	}
	for k, v := range map[string]string{
		"org.opencontainers.image.title":    "rarp-announce",
		"org.opencontainers.image.version":  testVersion,
		"org.opencontainers.image.revision": testRevision,
		"org.opencontainers.image.created":  "2026-01-02T03:04:05Z",
		"org.opencontainers.image.source":   "https://github.com/rarp-announce/rarp-announce",
	} {
		if c.Labels[k] != v {
			t.Errorf("label %s = %q, want %q", k, c.Labels[k], v)
		}
	}

	oci := filepath.Join(t.TempDir(), "oci")
	run(t, "podman", "save", "--format", "oci-dir", "-o", oci, image)
	files := imageFiles(t, oci)
	var regular []string
	for name, f := range files {
		if f.hdr.Typeflag == tar.TypeReg {
			regular = append(regular, name)
		}
	}
	slices.Sort(regular)
	if want := []string{"/etc/group", "/etc/passwd", "/usr/bin/rarp-announce"}; !slices.Equal(regular, want) {
		t.Errorf("image files %v, want %v", regular, want)
	}
	if string(files["/etc/passwd"].data) != "root:x:0:0:root:/:/sbin/nologin\n" {
		t.Errorf("/etc/passwd is not root alone:\n%s", files["/etc/passwd"].data)
	}
	bin := files["/usr/bin/rarp-announce"]
	if bin.hdr == nil {
		t.Fatal("no /usr/bin/rarp-announce in the image")
	}
	if bin.hdr.Uid != 0 || bin.hdr.Mode&0o7777 != 0o755 {
		t.Errorf("/usr/bin/rarp-announce: uid %d mode %o, want root-owned 0755 (not writable by the user)", bin.hdr.Uid, bin.hdr.Mode)
	}
	// No file capabilities: they would make exec fail in a container
	// given fewer capabilities than the file names.
	if got, ok := bin.hdr.PAXRecords["SCHILY.xattr.security.capability"]; ok {
		t.Errorf("file capabilities in the layer: % x", got)
	}
	exe := filepath.Join(t.TempDir(), "rarp-announce")
	if err := os.WriteFile(exe, bin.data, 0o755); err != nil {
		t.Fatal(err)
	}
	if out := run(t, exe, "version"); !strings.HasPrefix(out, "rarp-announce "+testVersion+" (revision "+testRevision) {
		t.Errorf("the image's binary says %q, want version %s", out, testVersion)
	}
}
