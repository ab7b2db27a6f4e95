package logging

import (
	"fmt"
	"os"
	"os/exec"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

func TestIsJournal(t *testing.T) {
	f, err := os.CreateTemp(t.TempDir(), "stream")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var st unix.Stat_t
	if err := unix.Fstat(int(f.Fd()), &st); err != nil {
		t.Fatal(err)
	}
	same := fmt.Sprintf("%d:%d", st.Dev, st.Ino)
	for _, tc := range []struct {
		env  string
		want bool
	}{
		{same, true},
		{"", false},
		{fmt.Sprintf("%d:%d", st.Dev, st.Ino+1), false}, // redirected elsewhere
		{"garbage", false},
		{"1:", false},
	} {
		if got := isJournal(tc.env, int(f.Fd())); got != tc.want {
			t.Errorf("isJournal(%q) = %v, want %v", tc.env, got, tc.want)
		}
	}
}

// Run under a stand-in for journald's stream (a file whose device:inode
// is in JOURNAL_STREAM), each line starts with its syslog priority; with
// stderr elsewhere, none does.
func TestPriorityPrefixes(t *testing.T) {
	if os.Getenv("LOGGING_HELPER") == "1" {
		log, _, err := New("debug", "json")
		if err != nil {
			panic(err)
		}
		log.Debug("d")
		log.Info("i")
		log.Warn("w")
		log.Error("e")
		return
	}
	for _, journal := range []bool{true, false} {
		f, err := os.CreateTemp(t.TempDir(), "stderr")
		if err != nil {
			t.Fatal(err)
		}
		var st unix.Stat_t
		if err := unix.Fstat(int(f.Fd()), &st); err != nil {
			t.Fatal(err)
		}
		env := fmt.Sprintf("JOURNAL_STREAM=%d:%d", st.Dev, st.Ino)
		if !journal {
			env = "JOURNAL_STREAM=1:2"
		}
		cmd := exec.Command(os.Args[0], "-test.run=^TestPriorityPrefixes$")
		cmd.Env = append(os.Environ(), "LOGGING_HELPER=1", env)
		cmd.Stderr = f
		if out, err := cmd.Output(); err != nil {
			t.Fatalf("%v: %s", err, out)
		}
		b, err := os.ReadFile(f.Name())
		if err != nil {
			t.Fatal(err)
		}
		f.Close()
		var prefixes []string
		for _, l := range strings.Split(strings.TrimSpace(string(b)), "\n") {
			if i := strings.IndexByte(l, '{'); i >= 0 {
				prefixes = append(prefixes, l[:i])
			}
		}
		want := "<7> <6> <4> <3>"
		if !journal {
			want = "   "
		}
		if got := strings.Join(prefixes, " "); got != want {
			t.Errorf("journal=%v: prefixes %q, want %q\n%s", journal, got, want, b)
		}
	}
}
