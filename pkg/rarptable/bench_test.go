package rarptable

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/rarp-announce/rarp-announce/pkg/rarp"
)

// genEthers writes the peer harness's table (rarpbench gen): entry i maps
// 52:54:00:HH:MM:LL (i in the low 24 bits) to 10.99.0.0 + (i-1)%65000 + 1.
func genEthers(t testing.TB, dir string, n int) string {
	return genTable(t, filepath.Join(dir, fmt.Sprintf("ethers-%d", n)), "",
		"52:54:00:%02x:%02x:%02x 10.99.%d.%d\n", n)
}

// genMap writes the same table as a YAML map file.
func genMap(t testing.TB, dir string, n int) string {
	return genTable(t, filepath.Join(dir, fmt.Sprintf("map-%d.yaml", n)), "mappings:\n",
		"  - {mac: 52:54:00:%02x:%02x:%02x, ip: 10.99.%d.%d}\n", n)
}

// genTable writes header, then entry i (1..n) as line formats the MAC's
// three low bytes and the address's two.
func genTable(t testing.TB, path, header, line string, n int) string {
	t.Helper()
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	w := bufio.NewWriterSize(f, 1<<20)
	w.WriteString(header)
	for i := 1; i <= n; i++ {
		k := (i-1)%65000 + 1
		fmt.Fprintf(w, line, byte(i>>16), byte(i>>8), byte(i), byte(k>>8), byte(k))
	}
	if err := w.Flush(); err != nil {
		t.Fatal(err)
	}
	return path
}

// TestLoadMillionEntries loads a 1M-entry ethers file and reports how long
// it took (the goal is under 2 s; timing is reported, not asserted).
func TestLoadMillionEntries(t *testing.T) {
	if testing.Short() {
		t.Skip("-short")
	}
	path := genEthers(t, t.TempDir(), 1_000_000)
	start := time.Now()
	res, err := (&Loader{Files: Files{Ethers: path}}).Load(context.Background())
	took := time.Since(start)
	if err != nil {
		t.Fatal(err)
	}
	if res.Table.Len() != 1_000_000 {
		t.Fatalf("%d entries", res.Table.Len())
	}
	k := (1_000_000-1)%65000 + 1
	if last := res.Table.Lookup("x", rarp.MustParseMAC("52:54:00:0f:42:40")); len(last) != 1 || last[0] != [4]byte{10, 99, byte(k >> 8), byte(k)} {
		t.Fatalf("entry 1000000 -> %v", last)
	}
	t.Logf("loaded 1,000,000 ethers entries in %v (goal < 2s)", took.Round(time.Millisecond))
}

// BenchmarkLoad loads each file format at the size operators run it.
func BenchmarkLoad(b *testing.B) {
	for _, c := range []struct {
		name  string
		files func(tb testing.TB, dir string) Files
	}{
		{"ethers-1M", func(tb testing.TB, dir string) Files { return Files{Ethers: genEthers(tb, dir, 1_000_000)} }},
		{"map-100k", func(tb testing.TB, dir string) Files { return Files{Map: genMap(tb, dir, 100_000)} }},
	} {
		b.Run(c.name, func(b *testing.B) {
			l := &Loader{Files: c.files(b, b.TempDir())}
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				if _, err := l.Load(context.Background()); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func BenchmarkLookup1M(b *testing.B) {
	path := genEthers(b, b.TempDir(), 1_000_000)
	res, err := (&Loader{Files: Files{Ethers: path}}).Load(context.Background())
	if err != nil {
		b.Fatal(err)
	}
	v := res.Table.View("eth0")
	b.ResetTimer()
	n := 0
	for i := 0; i < b.N; i++ {
		j := i%1_000_000 + 1
		j = (j * 7919) % 1_000_000 // spread over the table: cache misses as in service
		n += len(v.Lookup([6]byte{0x52, 0x54, 0, byte(j >> 16), byte(j >> 8), byte(j)}))
	}
	if n == 0 {
		b.Fatal("no hits")
	}
}
