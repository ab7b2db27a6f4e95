// Command rarpbench is a RARP (RFC 903) load generator, latency meter and
// reply validator.  It sends RARP "request reverse" frames (EtherType 0x8035,
// op 3) from a Linux AF_PACKET socket and matches every "reply reverse"
// (op 4) to its request by the target hardware address (tha).
//
// Subcommands:
//
//	rarpbench [bench flags]          run the benchmark (default)
//	rarpbench gen [-m M] [...]       print a deterministic MAC->IP table (ethers format)
//	rarpbench bootfiles -macs F -dir D   create rarpd-style boot files (%08X of each IP)
//	rarpbench syslog-sink -path P    discard/record syslog datagrams (for rarpd in a private mount ns)
//	rarpbench summary [-a L -b L] F.json...   medians per table size, load and server, and the ratios
//
// Everything is Linux-only and needs CAP_NET_RAW. It imports nothing from
// rarp-announce on purpose: a validator that shared the table parser and
// frame code under test would share their bugs (so its loadMacs and
// buildRequest are written again here, plainly).
package main

import (
	"bufio"
	"encoding/binary"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"math"
	"net"
	"net/netip"
	"os"
	"os/signal"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

const (
	etherTypeRARP = 0x8035
	opRequest     = 3
	opReply       = 4
	frameLen      = 14 + 28 // Ethernet header + RARP payload (no padding)
)

func main() {
	if len(os.Args) > 1 {
		switch os.Args[1] {
		case "gen":
			os.Exit(cmdGen(os.Args[2:]))
		case "bootfiles":
			os.Exit(cmdBootfiles(os.Args[2:]))
		case "syslog-sink":
			os.Exit(cmdSyslogSink(os.Args[2:]))
		case "bench":
			os.Exit(cmdBench(os.Args[2:]))
		case "summary":
			os.Exit(cmdSummary(os.Args[2:]))
		}
	}
	os.Exit(cmdBench(os.Args[1:]))
}

// ---------------------------------------------------------------------------
// Table generation (shared by peer-up.sh and the client so both agree).

// GenEntry returns the i-th (1-based) entry of the deterministic table:
// MAC 52:54:00:HH:MM:LL (i in the low 24 bits) and IP 10.99.0.0 + ((i-1)%65000)+1.
// i=1 -> 52:54:00:00:00:01 10.99.0.1.  IPs wrap after 65000 entries because
// 10.99.0.0/16 cannot hold 100k unique hosts; RARP is keyed by MAC, so
// duplicate IPs are legal for a RARP server (rarpd does not care).
func GenEntry(i int) (net.HardwareAddr, netip.Addr) {
	mac := net.HardwareAddr{0x52, 0x54, 0x00, byte(i >> 16), byte(i >> 8), byte(i)}
	n := (i-1)%65000 + 1
	ip := netip.AddrFrom4([4]byte{10, 99, byte(n >> 8), byte(n)})
	return mac, ip
}

func cmdGen(args []string) int {
	fs := flag.NewFlagSet("gen", flag.ExitOnError)
	m := fs.Int("m", 10, "number of entries")
	start := fs.Int("start", 1, "first index (1-based)")
	unknown := fs.Bool("unknown", false, "emit MACs that are NOT in any table (prefix 52:54:ff) with no IP")
	fs.Parse(args)
	w := bufio.NewWriterSize(os.Stdout, 1<<20)
	defer w.Flush()
	for i := *start; i < *start+*m; i++ {
		if *unknown {
			fmt.Fprintf(w, "52:54:ff:%02x:%02x:%02x\n", byte(i>>16), byte(i>>8), byte(i))
			continue
		}
		mac, ip := GenEntry(i)
		fmt.Fprintf(w, "%s %s\n", mac, ip)
	}
	return 0
}

func cmdBootfiles(args []string) int {
	fs := flag.NewFlagSet("bootfiles", flag.ExitOnError)
	macs := fs.String("macs", "", "ethers-format table (MAC IP)")
	dir := fs.String("dir", "", "directory to create the files in")
	suffix := fs.String("suffix", "", "optional suffix, e.g. .SUN4M")
	fs.Parse(args)
	ents, err := loadMacs(*macs)
	if err != nil || *dir == "" {
		fmt.Fprintln(os.Stderr, "bootfiles: need -macs and -dir:", err)
		return 2
	}
	if err := os.MkdirAll(*dir, 0o755); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	seen := map[netip.Addr]bool{}
	for _, e := range ents {
		if !e.IP.IsValid() || seen[e.IP] {
			continue
		}
		seen[e.IP] = true
		b := e.IP.As4()
		name := fmt.Sprintf("%s/%08X%s", *dir, binary.BigEndian.Uint32(b[:]), *suffix)
		f, err := os.Create(name)
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		f.Close()
	}
	fmt.Fprintf(os.Stderr, "bootfiles: %d files in %s\n", len(seen), *dir)
	return 0
}

// ---------------------------------------------------------------------------
// Syslog sink: rarpd logs one line per reply through syslog(3).  Without a
// reader on /dev/log glibc falls back to writing /dev/console, so the harness
// runs rarpd in a private mount namespace with this sink bound to /dev/log.

func cmdSyslogSink(args []string) int {
	fs := flag.NewFlagSet("syslog-sink", flag.ExitOnError)
	path := fs.String("path", "/dev/log", "unix datagram socket path to bind")
	out := fs.String("out", "", "append received messages to this file (default: discard, count only)")
	fs.Parse(args)
	os.Remove(*path)
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: *path, Net: "unixgram"})
	if err != nil {
		fmt.Fprintln(os.Stderr, "syslog-sink:", err)
		return 1
	}
	os.Chmod(*path, 0o666)
	conn.SetReadBuffer(8 << 20)
	var w *bufio.Writer
	var mu sync.Mutex
	if *out != "" {
		f, err := os.OpenFile(*out, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		w = bufio.NewWriterSize(f, 1<<20)
		go func() {
			for range time.Tick(200 * time.Millisecond) {
				mu.Lock()
				w.Flush()
				mu.Unlock()
			}
		}()
	}
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)
	go func() {
		<-sig
		mu.Lock()
		if w != nil {
			w.Flush()
		}
		os.Exit(0)
	}()
	buf := make([]byte, 4096)
	for {
		n, _, err := conn.ReadFrom(buf)
		if err != nil {
			continue
		}
		if w != nil {
			mu.Lock()
			w.Write(buf[:n])
			if n == 0 || buf[n-1] != '\n' {
				w.WriteByte('\n')
			}
			mu.Unlock()
		}
	}
}

// ---------------------------------------------------------------------------
// MAC table

type entry struct {
	MAC net.HardwareAddr
	IP  netip.Addr // invalid if the table had a hostname / nothing
}

// loadMacs reads "MAC [IP-or-host]" lines (ethers(5) format; '#' comments).
func loadMacs(path string) ([]entry, error) {
	if path == "" {
		return nil, errors.New("no -macs file")
	}
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var out []entry
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	ln := 0
	for sc.Scan() {
		ln++
		line := sc.Text()
		if i := strings.IndexByte(line, '#'); i >= 0 {
			line = line[:i]
		}
		fields := strings.Fields(line)
		if len(fields) == 0 {
			continue
		}
		mac, err := net.ParseMAC(fields[0])
		if err != nil || len(mac) != 6 {
			return nil, fmt.Errorf("%s:%d: bad MAC %q", path, ln, fields[0])
		}
		e := entry{MAC: mac}
		if len(fields) > 1 {
			if ip, err := netip.ParseAddr(fields[1]); err == nil && ip.Is4() {
				e.IP = ip
			}
		}
		out = append(out, e)
	}
	return out, sc.Err()
}

// ---------------------------------------------------------------------------
// Frames

func buildRequest(dst, ethSrc, sha, tha net.HardwareAddr) []byte {
	b := make([]byte, frameLen)
	copy(b[0:6], dst)
	copy(b[6:12], ethSrc)
	binary.BigEndian.PutUint16(b[12:14], etherTypeRARP)
	binary.BigEndian.PutUint16(b[14:16], 1)      // htype Ethernet
	binary.BigEndian.PutUint16(b[16:18], 0x0800) // ptype IPv4
	b[18] = 6                                    // hlen
	b[19] = 4                                    // plen
	binary.BigEndian.PutUint16(b[20:22], opRequest)
	copy(b[22:28], sha) // sha
	// spa b[28:32] = 0.0.0.0
	copy(b[32:38], tha) // tha
	// tpa b[38:42] = 0.0.0.0
	return b
}

func htons(v uint16) uint16 { return v<<8 | v>>8 }

type rawSock struct {
	fd      int
	ifindex int
	hw      net.HardwareAddr
	name    string
}

func openSock(ifname string) (*rawSock, error) {
	ifi, err := net.InterfaceByName(ifname)
	if err != nil {
		return nil, err
	}
	fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, int(htons(etherTypeRARP)))
	if err != nil {
		return nil, fmt.Errorf("socket(AF_PACKET): %w (need CAP_NET_RAW)", err)
	}
	if err := unix.Bind(fd, &unix.SockaddrLinklayer{Protocol: htons(etherTypeRARP), Ifindex: ifi.Index}); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("bind %s: %w", ifname, err)
	}
	unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUF, 8<<20)
	unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_SNDBUF, 8<<20)
	// Wake up periodically so the receiver can notice the end of a run.
	tv := unix.NsecToTimeval(int64(20 * time.Millisecond))
	unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv)
	// Kernel receive timestamps: latency is taken at the moment the reply
	// reached our socket, so client-side queueing does not inflate it.
	unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_TIMESTAMPNS, 1)
	return &rawSock{fd: fd, ifindex: ifi.Index, hw: ifi.HardwareAddr, name: ifname}, nil
}

// drain discards anything queued (e.g. late replies of a previous target/round).
func (s *rawSock) drain() {
	buf := make([]byte, 2048)
	for {
		_, _, err := unix.Recvfrom(s.fd, buf, unix.MSG_DONTWAIT)
		if err != nil {
			return
		}
	}
}

func (s *rawSock) send(b []byte) error {
	sa := &unix.SockaddrLinklayer{Protocol: htons(etherTypeRARP), Ifindex: s.ifindex, Halen: 6}
	copy(sa.Addr[:], b[0:6])
	for {
		err := unix.Sendto(s.fd, b, 0, sa)
		if err == unix.EINTR {
			continue
		}
		if err == unix.ENOBUFS || err == unix.EAGAIN {
			time.Sleep(50 * time.Microsecond)
			continue
		}
		return err
	}
}

// ---------------------------------------------------------------------------
// Benchmark state

type req struct {
	idx  int // index into the workload MAC list
	seq  int
	sent time.Time
	ethS net.HardwareAddr // Ethernet source we used
	tag  [6]byte          // -src tag: unique Ethernet source = sha of this request
	done bool
}

type Latency struct {
	Count int     `json:"count"`
	Min   float64 `json:"min_us"`
	Mean  float64 `json:"mean_us"`
	P50   float64 `json:"p50_us"`
	P90   float64 `json:"p90_us"`
	P99   float64 `json:"p99_us"`
	P999  float64 `json:"p999_us"`
	Max   float64 `json:"max_us"`
}

type CPU struct {
	PID     int     `json:"pid"`
	Comm    string  `json:"comm"`
	CPUSec  float64 `json:"cpu_s"`
	CPUPct  float64 `json:"cpu_pct_of_one_core"`
	UsPerRq float64 `json:"cpu_us_per_reply"`
}

type Result struct {
	Label          string         `json:"label"`
	Iface          string         `json:"iface"`
	Round          int            `json:"round"`
	Mode           string         `json:"mode"`
	SrcMode        string         `json:"src_mode"`
	Inflight       int            `json:"inflight,omitempty"`
	TargetRate     float64        `json:"target_rate,omitempty"`
	DistinctMACs   int            `json:"distinct_macs"`
	TableMACs      int            `json:"macs_in_file"`
	ServerMAC      string         `json:"server_mac"`
	ServerIP       string         `json:"server_ip"`
	Sent           int            `json:"requests_sent"`
	Warmup         int            `json:"warmup_excluded"`
	Valid          int            `json:"replies_valid"`
	Invalid        int            `json:"replies_invalid"`
	InvalidReasons map[string]int `json:"invalid_reasons,omitempty"`
	Lost           int            `json:"lost_timeouts"`
	LateOrDup      int            `json:"late_or_duplicate"`
	Ambiguous      int            `json:"ambiguous_fifo_matches"`
	Unexpected     int            `json:"unexpected_tha"`
	OtherFrames    int            `json:"other_rarp_frames"`
	EthDst         map[string]int `json:"reply_eth_dst"`
	FrameLenMin    int            `json:"reply_frame_len_min"`
	FrameLenMax    int            `json:"reply_frame_len_max"`
	DurationS      float64        `json:"duration_s"`
	SendRate       float64        `json:"send_rate"`
	ReplyRate      float64        `json:"replies_per_s"`
	Latency        Latency        `json:"latency"`
	LatencyUser    Latency        `json:"latency_userspace"`
	ServerCPU      *CPU           `json:"server_cpu,omitempty"`
	ClientCPUPct   float64        `json:"client_cpu_pct_of_one_core"`
	UnknownSent    int            `json:"unknown_probe_sent,omitempty"`
	UnknownReplied int            `json:"unknown_probe_replied,omitempty"`
	FirstError     string         `json:"first_invalid,omitempty"`
}

type benchCfg struct {
	n          int
	rate       float64
	inflight   int
	timeout    time.Duration
	warmup     int
	maxDur     time.Duration
	srcMode    string
	serverMAC  net.HardwareAddr
	serverIP   netip.Addr
	dstCheck   string
	unknownN   int
	expectIP   bool
	tableCount int
}

type runner struct {
	cfg    benchCfg
	sock   *rawSock
	work   []entry
	byMAC  map[[6]byte]int
	frames [][]byte // pre-built request frames per workload index
	tagBuf []byte
	byTag  map[[6]byte]*req

	mu          sync.Mutex
	queue       []*req // all outstanding in send order (lazy deletion)
	qhead       int
	pending     [][]*req // per workload idx FIFO (lazy deletion)
	inflight    []int    // per idx outstanding count
	cursor      int
	seq         int
	lat         []float64 // send -> kernel rx timestamp of the reply
	latUser     []float64 // send -> reply seen by our receiver thread
	res         *Result
	learnMAC    net.HardwareAddr
	learnIP     netip.Addr
	doneCh      chan struct{}
	finished    bool
	stopSend    bool
	outstanding int
	start       time.Time
	lastRx      time.Time
	lastSend    time.Time
}

func mac6(b []byte) (k [6]byte) { copy(k[:], b); return }

func (r *runner) pickIdx() int {
	n := len(r.work)
	for tries := 0; tries < n; tries++ {
		i := r.cursor
		r.cursor = (r.cursor + 1) % n
		if r.inflight[i] == 0 {
			return i
		}
	}
	i := r.cursor
	r.cursor = (r.cursor + 1) % n
	return i
}

// sendOneLocked sends the next request. Caller holds r.mu.
func (r *runner) sendOneLocked() error {
	idx := r.pickIdx()
	q := &req{idx: idx, seq: r.seq}
	frame := r.frames[idx]
	if r.cfg.srcMode == "tag" {
		// unique locally administered source per request: 02:7a:<seq>
		q.tag = [6]byte{0x02, 0x7a, byte(r.seq >> 24), byte(r.seq >> 16), byte(r.seq >> 8), byte(r.seq)}
		frame = r.tagBuf
		copy(frame, r.frames[idx])
		copy(frame[6:12], q.tag[:])
		copy(frame[22:28], q.tag[:])
		r.byTag[q.tag] = q
	}
	q.ethS = net.HardwareAddr(append([]byte(nil), frame[6:12]...))
	r.seq++
	r.queue = append(r.queue, q)
	r.pending[idx] = append(r.pending[idx], q)
	r.inflight[idx]++
	r.outstanding++
	r.res.Sent++
	q.sent = time.Now()
	r.lastSend = q.sent
	return r.sock.send(frame)
}

func (r *runner) wantMore() bool {
	return !r.stopSend && r.seq < r.cfg.n+r.cfg.warmup
}

func (r *runner) maybeFinishLocked() {
	if !r.finished && r.outstanding == 0 && !r.wantMore() {
		r.finished = true
		close(r.doneCh)
	}
}

func (r *runner) invalid(reason string, detail string) {
	r.res.Invalid++
	if r.res.InvalidReasons == nil {
		r.res.InvalidReasons = map[string]int{}
	}
	r.res.InvalidReasons[reason]++
	if r.res.FirstError == "" {
		r.res.FirstError = reason + ": " + detail
	}
}

// rxTimestamp extracts SCM_TIMESTAMPNS (CLOCK_REALTIME) from control data.
func rxTimestamp(oob []byte) (time.Time, bool) {
	for len(oob) >= unix.SizeofCmsghdr {
		h := (*unix.Cmsghdr)(unsafe.Pointer(&oob[0]))
		l := int(h.Len)
		if l < unix.SizeofCmsghdr || l > len(oob) {
			break
		}
		if h.Level == unix.SOL_SOCKET && h.Type == unix.SCM_TIMESTAMPNS && l >= unix.SizeofCmsghdr+16 {
			ts := (*unix.Timespec)(unsafe.Pointer(&oob[unix.SizeofCmsghdr]))
			return time.Unix(ts.Sec, ts.Nsec), true
		}
		adv := (l + 7) &^ 7
		if adv > len(oob) {
			break
		}
		oob = oob[adv:]
	}
	return time.Time{}, false
}

func (r *runner) handleFrame(b []byte, now, userNow time.Time) {
	if len(b) < 14+8 || binary.BigEndian.Uint16(b[12:14]) != etherTypeRARP {
		return
	}
	op := binary.BigEndian.Uint16(b[20:22])
	if op != opReply {
		r.res.OtherFrames++
		return
	}
	r.lastRx = now
	if len(b) < frameLen {
		r.invalid("short_frame", fmt.Sprintf("len=%d", len(b)))
		return
	}
	tha := mac6(b[32:38])
	idx, ok := r.byMAC[tha]
	if !ok {
		r.res.Unexpected++
		return
	}
	var q *req
	if r.byTag != nil {
		// -src tag: the reply's Ethernet destination names the request exactly
		if t, ok := r.byTag[mac6(b[0:6])]; ok && !t.done {
			q = t
			if t.idx != idx {
				r.invalid("tha_ne_request", fmt.Sprintf("reply to tag %s carries tha %s", net.HardwareAddr(t.tag[:]), net.HardwareAddr(tha[:])))
			}
			idx = t.idx
		}
	}
	if q == nil {
		// oldest outstanding request for this MAC (exact when the server
		// answers in order and drops nothing; counted as ambiguous otherwise)
		if r.inflight[idx] > 1 {
			r.res.Ambiguous++
		}
		pl := r.pending[idx]
		for len(pl) > 0 {
			if !pl[0].done {
				q = pl[0]
				pl = pl[1:]
				break
			}
			pl = pl[1:]
		}
		r.pending[idx] = pl
	}
	if q == nil {
		r.res.LateOrDup++
		return
	}
	if r.byTag != nil {
		delete(r.byTag, q.tag)
	}
	q.done = true
	r.inflight[idx]--
	r.outstanding--
	measured := q.seq >= r.cfg.warmup

	// ---- validation ----
	var bad []string
	ethDst, ethSrc := b[0:6], b[6:12]
	if binary.BigEndian.Uint16(b[14:16]) != 1 {
		bad = append(bad, "htype")
	}
	if binary.BigEndian.Uint16(b[16:18]) != 0x0800 {
		bad = append(bad, "ptype")
	}
	if b[18] != 6 || b[19] != 4 {
		bad = append(bad, "hlen_plen")
	}
	sha := net.HardwareAddr(b[22:28])
	spa := netip.AddrFrom4([4]byte(b[28:32]))
	tpa := netip.AddrFrom4([4]byte(b[38:42]))
	if r.cfg.expectIP && r.work[idx].IP.IsValid() && tpa != r.work[idx].IP {
		bad = append(bad, "tpa")
	}
	if r.learnMAC == nil {
		r.learnMAC = append(net.HardwareAddr(nil), sha...)
	}
	if string(sha) != string(r.learnMAC) {
		bad = append(bad, "sha")
	}
	if string(ethSrc) != string(sha) {
		bad = append(bad, "eth_src_ne_sha")
	}
	if !r.learnIP.IsValid() {
		r.learnIP = spa
	}
	if spa != r.learnIP || spa.IsUnspecified() {
		bad = append(bad, "spa")
	}
	var dstClass string
	switch {
	case string(ethDst) == string(q.ethS):
		dstClass = "requester_src"
	case string(ethDst) == string(tha[:]):
		dstClass = "tha"
	case string(ethDst) == "\xff\xff\xff\xff\xff\xff":
		dstClass = "broadcast"
	default:
		dstClass = "other"
	}
	if string(ethDst) == string(q.ethS) && string(ethDst) == string(tha[:]) {
		dstClass = "requester_src(=tha)"
	}
	r.res.EthDst[dstClass]++
	switch r.cfg.dstCheck {
	case "requester":
		if string(ethDst) != string(q.ethS) {
			bad = append(bad, "eth_dst")
		}
	case "broadcast":
		if dstClass != "broadcast" {
			bad = append(bad, "eth_dst")
		}
	}
	if r.res.FrameLenMin == 0 || len(b) < r.res.FrameLenMin {
		r.res.FrameLenMin = len(b)
	}
	if len(b) > r.res.FrameLenMax {
		r.res.FrameLenMax = len(b)
	}
	if len(bad) > 0 {
		r.invalid(strings.Join(bad, ","), fmt.Sprintf("tha=%s tpa=%s (want %s) sha=%s spa=%s eth_dst=%s",
			net.HardwareAddr(tha[:]), tpa, r.work[idx].IP, sha, spa, net.HardwareAddr(ethDst)))
	} else if measured {
		r.res.Valid++
		r.lat = append(r.lat, float64(now.Sub(q.sent).Nanoseconds())/1e3)
		r.latUser = append(r.latUser, float64(userNow.Sub(q.sent).Nanoseconds())/1e3)
	} else {
		r.res.Warmup++
	}
	if r.cfg.rate == 0 && r.wantMore() {
		if err := r.sendOneLocked(); err != nil {
			fmt.Fprintln(os.Stderr, "send:", err)
			r.stopSend = true
		}
	}
	r.maybeFinishLocked()
}

func (r *runner) reapLocked(now time.Time) {
	for r.qhead < len(r.queue) {
		q := r.queue[r.qhead]
		if q.done {
			r.queue[r.qhead] = nil
			r.qhead++
			continue
		}
		if now.Sub(q.sent) < r.cfg.timeout {
			break
		}
		q.done = true
		if r.byTag != nil {
			delete(r.byTag, q.tag)
		}
		r.inflight[q.idx]--
		r.outstanding--
		if q.seq >= r.cfg.warmup {
			r.res.Lost++
		}
		r.queue[r.qhead] = nil
		r.qhead++
		if r.cfg.rate == 0 && r.wantMore() {
			if err := r.sendOneLocked(); err != nil {
				r.stopSend = true
			}
		}
	}
	if r.qhead > 4096 && r.qhead*2 > len(r.queue) {
		r.queue = append([]*req(nil), r.queue[r.qhead:]...)
		r.qhead = 0
	}
	r.maybeFinishLocked()
}

func percentile(s []float64, p float64) float64 {
	if len(s) == 0 {
		return 0
	}
	k := int(math.Ceil(p/100*float64(len(s)))) - 1
	if k < 0 {
		k = 0
	}
	if k >= len(s) {
		k = len(s) - 1
	}
	return s[k]
}

func summarize(lat []float64) Latency {
	if len(lat) == 0 {
		return Latency{}
	}
	sort.Float64s(lat)
	sum := 0.0
	for _, v := range lat {
		sum += v
	}
	r2 := func(v float64) float64 { return math.Round(v*10) / 10 }
	return Latency{
		Count: len(lat), Min: r2(lat[0]), Mean: r2(sum / float64(len(lat))),
		P50: r2(percentile(lat, 50)), P90: r2(percentile(lat, 90)), P99: r2(percentile(lat, 99)),
		P999: r2(percentile(lat, 99.9)), Max: r2(lat[len(lat)-1]),
	}
}

// cpuNanos returns the cumulative on-CPU time of a process: the sum of
// /proc/PID/task/*/schedstat (ns) over all its threads. /proc/PID/schedstat
// alone counts only the main thread, which undercounts a multi-threaded
// server (a Go runtime has several threads: sysmon, GC workers, the thread
// that blocks in a syscall). Threads that already exited are not counted, so
// it falls back to /proc/PID/stat (utime+stime, 10 ms ticks, whole process)
// only when schedstat is missing.
func cpuNanos(pid int) (int64, string, error) {
	comm, _ := os.ReadFile(fmt.Sprintf("/proc/%d/comm", pid))
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, "", err
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	f := strings.Fields(s[i+2:])
	// fields after ')' start at field 3 (state); utime=14, stime=15
	ut, _ := strconv.ParseInt(f[11], 10, 64)
	st, _ := strconv.ParseInt(f[12], 10, 64)
	ns := (ut + st) * int64(time.Second) / 100 // USER_HZ=100
	if tasks, err := os.ReadDir(fmt.Sprintf("/proc/%d/task", pid)); err == nil {
		var sum int64
		ok := false
		for _, t := range tasks {
			ss, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%s/schedstat", pid, t.Name()))
			if err != nil {
				continue
			}
			if v, err := strconv.ParseInt(strings.Fields(string(ss))[0], 10, 64); err == nil {
				sum += v
				ok = true
			}
		}
		if ok && sum > 0 {
			ns = sum
		}
	}
	return ns, strings.TrimSpace(string(comm)), nil
}

func selfCPU() time.Duration {
	var ru unix.Rusage
	unix.Getrusage(unix.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

func runTarget(cfg benchCfg, label, ifname string, round int, work []entry, cpuPid int) (*Result, error) {
	sock, err := openSock(ifname)
	if err != nil {
		return nil, err
	}
	defer unix.Close(sock.fd)
	sock.drain()

	r := &runner{cfg: cfg, sock: sock, work: work, byMAC: map[[6]byte]int{}, doneCh: make(chan struct{})}
	r.pending = make([][]*req, len(work))
	r.inflight = make([]int, len(work))
	r.frames = make([][]byte, len(work))
	bcast := net.HardwareAddr{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}
	for i, e := range work {
		r.byMAC[mac6(e.MAC)] = i
		switch cfg.srcMode {
		case "requested": // classic: a diskless host asking about itself
			r.frames[i] = buildRequest(bcast, e.MAC, e.MAC, e.MAC)
		case "iface": // third-party request: sha = eth src = our NIC, tha = asked-for MAC
			r.frames[i] = buildRequest(bcast, sock.hw, sock.hw, e.MAC)
		case "mismatch": // eth src = our NIC but sha = tha = asked-for MAC
			r.frames[i] = buildRequest(bcast, sock.hw, e.MAC, e.MAC)
		case "tag": // third-party request from a unique source MAC per request
			r.frames[i] = buildRequest(bcast, sock.hw, sock.hw, e.MAC)
			r.tagBuf = make([]byte, frameLen)
			r.byTag = map[[6]byte]*req{}
		default:
			return nil, fmt.Errorf("bad -src %q", cfg.srcMode)
		}
	}
	mode := "closed"
	if cfg.rate > 0 {
		mode = "open"
	}
	r.res = &Result{Label: label, Iface: ifname, Round: round, Mode: mode, SrcMode: cfg.srcMode,
		DistinctMACs: len(work), TableMACs: cfg.tableCount, EthDst: map[string]int{}}
	if mode == "closed" {
		r.res.Inflight = cfg.inflight
	} else {
		r.res.TargetRate = cfg.rate
	}
	if cfg.serverMAC != nil {
		r.learnMAC = cfg.serverMAC
	}
	if cfg.serverIP.IsValid() {
		r.learnIP = cfg.serverIP
	}

	var cpu0 int64
	var comm string
	if cpuPid > 0 {
		cpu0, comm, err = cpuNanos(cpuPid)
		if err != nil {
			return nil, fmt.Errorf("cpu pid %d: %w", cpuPid, err)
		}
	}
	self0 := selfCPU()

	// receiver: blocking recvfrom on a locked thread for tight timestamps
	stopRx := make(chan struct{})
	rxDone := make(chan struct{})
	go func() {
		runtime.LockOSThread()
		defer close(rxDone)
		buf := make([]byte, 2048)
		oob := make([]byte, 128)
		for {
			select {
			case <-stopRx:
				return
			default:
			}
			n, oobn, _, _, err := unix.Recvmsg(sock.fd, buf, oob, 0)
			now := time.Now()
			if err != nil {
				continue // timeout / EINTR
			}
			rx := now
			if ts, ok := rxTimestamp(oob[:oobn]); ok {
				rx = ts
			}
			r.mu.Lock()
			r.handleFrame(buf[:n], rx, now)
			r.mu.Unlock()
		}
	}()
	// reaper
	reapEvery := cfg.timeout / 4
	if reapEvery > 10*time.Millisecond {
		reapEvery = 10 * time.Millisecond
	}
	stopReap := make(chan struct{})
	go func() {
		t := time.NewTicker(reapEvery)
		defer t.Stop()
		for {
			select {
			case <-stopReap:
				return
			case now := <-t.C:
				r.mu.Lock()
				r.reapLocked(now)
				r.mu.Unlock()
			}
		}
	}()

	r.mu.Lock()
	r.start = time.Now()
	r.mu.Unlock()
	deadline := time.NewTimer(cfg.maxDur)
	defer deadline.Stop()
	// SIGINT/SIGTERM end the run like -max-duration: stop sending, give
	// the outstanding requests their timeout, report.
	go func() {
		select {
		case <-interrupted:
			deadline.Reset(0)
		case <-r.doneCh:
		}
	}()

	if mode == "closed" {
		r.mu.Lock()
		for i := 0; i < cfg.inflight && r.wantMore(); i++ {
			if err := r.sendOneLocked(); err != nil {
				r.mu.Unlock()
				return nil, err
			}
		}
		r.maybeFinishLocked()
		r.mu.Unlock()
	} else {
		go func() {
			// Sleep-based pacing on a dedicated OS thread: wake up, send every
			// request that is due by now, nanosleep(2) until the next one is
			// due (timer slack 1ns; Go's time.Sleep rounds to ~1ms here).  No
			// busy waiting, so the generator does not steal a core from the
			// server; catch-up bursts stay small.
			runtime.LockOSThread()
			unix.Prctl(unix.PR_SET_TIMERSLACK, 1, 0, 0, 0)
			t0 := time.Now()
			sched := 0
			for {
				now := time.Now()
				due := int(now.Sub(t0).Seconds()*cfg.rate) + 1
				r.mu.Lock()
				for sched < due && r.wantMore() {
					if err := r.sendOneLocked(); err != nil {
						fmt.Fprintln(os.Stderr, "send:", err)
						r.stopSend = true
					}
					sched++
				}
				if !r.wantMore() {
					r.maybeFinishLocked()
					r.mu.Unlock()
					return
				}
				r.mu.Unlock()
				next := t0.Add(time.Duration(float64(sched) / cfg.rate * float64(time.Second)))
				if d := time.Until(next); d > 0 {
					ts := unix.NsecToTimespec(int64(d))
					unix.Nanosleep(&ts, nil)
				}
			}
		}()
	}

	select {
	case <-r.doneCh:
	case <-deadline.C:
		r.mu.Lock()
		r.stopSend = true
		r.mu.Unlock()
		// give outstanding requests their timeout, then stop
		select {
		case <-r.doneCh:
		case <-time.After(cfg.timeout + 50*time.Millisecond):
		}
	}
	end := time.Now()
	close(stopReap)
	close(stopRx)
	<-rxDone
	r.mu.Lock()
	defer r.mu.Unlock()
	// whatever is still outstanding is lost
	for ; r.qhead < len(r.queue); r.qhead++ {
		if q := r.queue[r.qhead]; q != nil && !q.done {
			q.done = true
			if q.seq >= cfg.warmup {
				r.res.Lost++
			}
		}
	}
	// measured duration: first send to the later of last send / last reply
	// (the final timeout wait for lost requests is not counted)
	last := r.lastSend
	if r.lastRx.After(last) {
		last = r.lastRx
	}
	dur := last.Sub(r.start)
	if dur <= 0 {
		dur = end.Sub(r.start)
	}
	r.res.DurationS = math.Round(dur.Seconds()*1e4) / 1e4
	r.res.SendRate = math.Round(float64(r.res.Sent) / dur.Seconds())
	r.res.ReplyRate = math.Round(float64(r.res.Valid+r.res.Warmup) / dur.Seconds())
	r.res.Latency = summarize(r.lat)
	r.res.LatencyUser = summarize(r.latUser)
	if r.learnMAC != nil {
		r.res.ServerMAC = r.learnMAC.String()
	}
	if r.learnIP.IsValid() {
		r.res.ServerIP = r.learnIP.String()
	}
	if cpuPid > 0 {
		if c1, _, err := cpuNanos(cpuPid); err == nil {
			cs := float64(c1-cpu0) / 1e9
			r.res.ServerCPU = &CPU{PID: cpuPid, Comm: comm, CPUSec: math.Round(cs*1e4) / 1e4,
				CPUPct: math.Round(cs/dur.Seconds()*1000) / 10}
			if tot := r.res.Valid + r.res.Warmup; tot > 0 {
				r.res.ServerCPU.UsPerRq = math.Round(cs/float64(tot)*1e7) / 10
			}
		}
	}
	r.res.ClientCPUPct = math.Round((selfCPU()-self0).Seconds()/dur.Seconds()*1000) / 10
	return r.res, nil
}

// probeUnknown sends n requests for MACs that are not in the table and
// counts replies (a conformant server must stay silent).
func probeUnknown(cfg benchCfg, ifname string, res *Result) error {
	if cfg.unknownN <= 0 {
		return nil
	}
	sock, err := openSock(ifname)
	if err != nil {
		return err
	}
	defer unix.Close(sock.fd)
	sock.drain()
	bcast := net.HardwareAddr{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}
	want := map[[6]byte]bool{}
	for i := 1; i <= cfg.unknownN; i++ {
		m := net.HardwareAddr{0x52, 0x54, 0xff, byte(i >> 16), byte(i >> 8), byte(i)}
		want[mac6(m)] = true
		var f []byte
		if cfg.srcMode == "requested" {
			f = buildRequest(bcast, m, m, m)
		} else {
			f = buildRequest(bcast, sock.hw, sock.hw, m)
		}
		if err := sock.send(f); err != nil {
			return err
		}
		res.UnknownSent++
	}
	end := time.Now().Add(cfg.timeout)
	buf := make([]byte, 2048)
	for time.Now().Before(end) {
		n, _, err := unix.Recvfrom(sock.fd, buf, 0)
		if err != nil || n < frameLen {
			continue
		}
		if binary.BigEndian.Uint16(buf[20:22]) == opReply && want[mac6(buf[32:38])] {
			res.UnknownReplied++
		}
	}
	return nil
}

// interrupted is closed on SIGINT or SIGTERM: the run in progress ends
// early and reports, no further run starts.
var interrupted = make(chan struct{})

func splitList(s string) []string {
	if s == "" {
		return nil
	}
	return strings.Split(s, ",")
}

func cmdBench(args []string) int {
	fs := flag.NewFlagSet("rarpbench", flag.ExitOnError)
	iface := fs.String("iface", "", "client interface(s); comma-separated list = several targets measured one after another (side by side)")
	labels := fs.String("label", "", "comma-separated labels for the targets (default: iface names)")
	n := fs.Int("n", 10000, "measured requests per target per round")
	rate := fs.Float64("rate", 0, "open-loop target request rate (req/s); 0 = closed loop")
	inflight := fs.Int("inflight", 1, "closed loop: requests kept in flight")
	macs := fs.String("macs", "", "ethers-format file of MAC [IP] pairs to request (IP = expected tpa)")
	gen := fs.Int("gen", 0, "instead of -macs, use the first M entries of the built-in table (see 'rarpbench gen')")
	distinct := fs.Int("distinct", 0, "use only this many distinct MACs, spread evenly over the file (0 = all)")
	timeout := fs.Duration("timeout", time.Second, "per-request reply timeout (then counted lost)")
	warmup := fs.Int("warmup", 100, "extra requests sent first and excluded from stats")
	maxDur := fs.Duration("max-duration", 120*time.Second, "hard bound on sending time per target/round")
	src := fs.String("src", "requested", "frame addressing: requested (eth src=sha=tha=asked MAC) | iface (eth src=sha=our NIC, tha=asked MAC) | tag (eth src=sha=unique 02:7a:.. per request, tha=asked MAC; exact matching by reply eth dst) | mismatch (eth src=our NIC, sha=tha=asked MAC)")
	serverMAC := fs.String("server-mac", "", "expected reply sha, comma list per target (default: learned from first reply, then enforced)")
	serverIP := fs.String("server-ip", "", "expected reply spa, comma list per target (default: learned from first reply, then enforced)")
	dstCheck := fs.String("dst-check", "any", "reply Ethernet destination policy: any | requester | broadcast")
	noIPCheck := fs.Bool("no-tpa-check", false, "do not compare tpa with the IP column of -macs")
	cpuPids := fs.String("cpu-pid", "", "comma-separated server PIDs (one per target, 0 = none) whose CPU time is sampled")
	rounds := fs.Int("rounds", 1, "repeat the target list this many times (A B A B ...)")
	unknown := fs.Int("unknown", 0, "after each run, send this many requests for unknown MACs and count (wrong) replies")
	jsonOut := fs.Bool("json", false, "print JSON instead of a table")
	jsonFile := fs.String("json-file", "", "also write the JSON report to this file")
	fs.Parse(args)

	ifaces := splitList(*iface)
	if len(ifaces) == 0 {
		fmt.Fprintln(os.Stderr, "need -iface")
		return 2
	}
	lbls := splitList(*labels)
	for len(lbls) < len(ifaces) {
		lbls = append(lbls, ifaces[len(lbls)])
	}
	var pids []int
	for _, p := range splitList(*cpuPids) {
		v, _ := strconv.Atoi(strings.TrimSpace(p))
		pids = append(pids, v)
	}
	for len(pids) < len(ifaces) {
		pids = append(pids, 0)
	}

	var table []entry
	var err error
	if *gen > 0 {
		for i := 1; i <= *gen; i++ {
			m, ip := GenEntry(i)
			table = append(table, entry{MAC: m, IP: ip})
		}
	} else {
		table, err = loadMacs(*macs)
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 2
		}
	}
	if len(table) == 0 {
		fmt.Fprintln(os.Stderr, "empty MAC table")
		return 2
	}
	work := table
	if *distinct > 0 && *distinct < len(table) {
		work = make([]entry, 0, *distinct)
		for i := 0; i < *distinct; i++ {
			// evenly spread: first entry ... close to the last one
			j := int(int64(i) * int64(len(table)-1) / int64(max(*distinct-1, 1)))
			work = append(work, table[j])
		}
	}
	cfg := benchCfg{n: *n, rate: *rate, inflight: max(*inflight, 1), timeout: *timeout, warmup: *warmup,
		maxDur: *maxDur, srcMode: *src, dstCheck: *dstCheck, unknownN: *unknown, expectIP: !*noIPCheck,
		tableCount: len(table)}
	// per-target expectations (comma lists aligned with -iface; empty = learn)
	smacs, sips := splitList(*serverMAC), splitList(*serverIP)
	tcfg := make([]benchCfg, len(ifaces))
	for i := range ifaces {
		tcfg[i] = cfg
		if i < len(smacs) && smacs[i] != "" {
			if tcfg[i].serverMAC, err = net.ParseMAC(smacs[i]); err != nil {
				fmt.Fprintln(os.Stderr, err)
				return 2
			}
		}
		if i < len(sips) && sips[i] != "" {
			if tcfg[i].serverIP, err = netip.ParseAddr(sips[i]); err != nil {
				fmt.Fprintln(os.Stderr, err)
				return 2
			}
		}
	}
	if cfg.rate == 0 && cfg.inflight > len(work) {
		fmt.Fprintf(os.Stderr, "warning: inflight %d > distinct MACs %d: some MACs will be in flight twice (FIFO matching)\n", cfg.inflight, len(work))
	}

	var results []*Result
	exit := 0
	go func() {
		sig := make(chan os.Signal, 1)
		signal.Notify(sig, syscall.SIGINT, syscall.SIGTERM)
		<-sig
		close(interrupted)
	}()
	for round := 1; round <= *rounds; round++ {
		for ti, ifn := range ifaces {
			select {
			case <-interrupted:
				continue // no new run after an interrupt
			default:
			}
			res, err := runTarget(tcfg[ti], lbls[ti], ifn, round, work, pids[ti])
			if err != nil {
				fmt.Fprintf(os.Stderr, "%s: %v\n", ifn, err)
				return 1
			}
			if err := probeUnknown(cfg, ifn, res); err != nil {
				fmt.Fprintf(os.Stderr, "%s: unknown probe: %v\n", ifn, err)
			}
			if res.Invalid > 0 || res.UnknownReplied > 0 || res.Valid == 0 {
				exit = 3
			}
			results = append(results, res)
			if !*jsonOut {
				printResult(res)
			}
		}
	}
	report := map[string]any{
		"config": map[string]any{"n": cfg.n, "rate": cfg.rate, "inflight": cfg.inflight,
			"timeout": cfg.timeout.String(), "warmup": cfg.warmup, "src": cfg.srcMode,
			"distinct_macs": len(work), "macs_in_file": len(table), "rounds": *rounds,
			"latency_clock": "user-space send time -> kernel SO_TIMESTAMPNS of the reply"},
		"results": results,
	}
	if *jsonOut {
		enc := json.NewEncoder(os.Stdout)
		enc.SetIndent("", "  ")
		enc.Encode(report)
	}
	if *jsonFile != "" {
		b, _ := json.MarshalIndent(report, "", "  ")
		if err := os.WriteFile(*jsonFile, append(b, '\n'), 0o644); err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
	}
	return exit
}

func printResult(r *Result) {
	mode := fmt.Sprintf("closed/%d", r.Inflight)
	if r.Mode == "open" {
		mode = fmt.Sprintf("open/%.0f/s", r.TargetRate)
	}
	fmt.Printf("%-8s %-6s r%d %-12s macs=%d/%d sent=%d ok=%d bad=%d lost=%d late=%d unexp=%d  %.0f rps  lat us p50=%.1f p90=%.1f p99=%.1f max=%.1f",
		r.Label, r.Iface, r.Round, mode, r.DistinctMACs, r.TableMACs, r.Sent, r.Valid, r.Invalid, r.Lost,
		r.LateOrDup, r.Unexpected, r.ReplyRate, r.Latency.P50, r.Latency.P90, r.Latency.P99, r.Latency.Max)
	if r.ServerCPU != nil {
		fmt.Printf("  srvcpu=%.1f%% (%.1fus/reply)", r.ServerCPU.CPUPct, r.ServerCPU.UsPerRq)
	}
	fmt.Printf("  (userspace p50=%.1f p99=%.1f)  clicpu=%.1f%%", r.LatencyUser.P50, r.LatencyUser.P99, r.ClientCPUPct)
	if r.UnknownSent > 0 {
		fmt.Printf("  unknown=%d/%d replied", r.UnknownReplied, r.UnknownSent)
	}
	fmt.Println()
	if r.Invalid > 0 {
		fmt.Printf("   invalid: %v first: %s\n", r.InvalidReasons, r.FirstError)
	}
	if r.Ambiguous > 0 && r.Lost > 0 {
		fmt.Printf("   note: %d replies matched FIFO while the same MAC was in flight more than once and requests were lost: latency attribution is approximate (use -src tag or more distinct MACs)\n", r.Ambiguous)
	}
	fmt.Printf("   server %s %s, reply eth dst %v, frame len %d..%d\n", r.ServerMAC, r.ServerIP, r.EthDst, r.FrameLenMin, r.FrameLenMax)
}
