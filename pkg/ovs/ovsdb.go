package ovs

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"
)

// OVSDB looks ports up by speaking OVSDB's JSON-RPC (RFC 7047) to
// ovsdb-server on one long-lived connection: two read-only "transact"
// round trips per lookup (Port and Interface by name, then the Bridge
// holding the port), a fraction of a millisecond instead of an ovs-vsctl
// process. No OVSDB client library is served here, and the two selects
// are all this needs.
type OVSDB struct {
	// Socket is the server as --db takes it: "unix:/path" or
	// "tcp:host:port" ("ssl:" needs certificates: use DB, ovs-vsctl).
	// Empty: unix:<DefaultRunDir>/db.sock, ovs-vsctl's default.
	Socket string
	// Timeout bounds one lookup; default 5 s.
	Timeout time.Duration

	sem  chan struct{} // one request at a time on the session
	once sync.Once
	s    session
}

// Lookup implements Lookuper.
func (d *OVSDB) Lookup(ctx context.Context, port string) (Port, error) {
	return bounded(ctx, "ovsdb", port, d.Timeout, func(ctx context.Context, port string, _ time.Duration) (Port, error) {
		p, err := d.lookup(ctx, port)
		if err != nil {
			return Port{}, fmt.Errorf("ovsdb lookup of %s: %w", port, err)
		}
		return p, nil
	})
}

func (d *OVSDB) lookup(ctx context.Context, port string) (p Port, err error) {
	err = d.with(ctx, func(c *rpcConn) error {
		p, err = query(ctx, c, port)
		return err
	})
	return p, err
}

// with runs f on the session, one request at a time.
func (d *OVSDB) with(ctx context.Context, f func(*rpcConn) error) error {
	d.once.Do(func() { d.sem = make(chan struct{}, 1) })
	select {
	case d.sem <- struct{}{}:
	case <-ctx.Done():
		return ctx.Err()
	}
	defer func() { <-d.sem }()
	return d.s.do(ctx, d.Socket, f)
}

// session is one connection to an OVSDB server, dialed when first needed
// and kept for the next request; its user serializes the requests.
type session struct{ conn *rpcConn }

// do runs f on the connection, dialing socket first if needed. After an error
// other than the server's own answer (an OVSDB error, no such port) the
// connection is in an unknown state (timeout, server gone) and is closed:
// a late reply must never answer a later request. A connection kept from
// an earlier request finds out that its server restarted (an OVS upgrade,
// a service restart) only when it is used: that first failure is not
// reported, f runs once more on a new connection.
func (s *session) do(ctx context.Context, socket string, f func(*rpcConn) error) error {
	for retried := false; ; retried = true {
		kept := s.conn != nil
		if !kept {
			c, err := dialOVSDB(ctx, socket)
			if err != nil {
				return err
			}
			s.conn = c
		}
		err := f(s.conn)
		var opErr *ovsdbError
		if err == nil || errors.As(err, &opErr) || errors.Is(err, ErrPortNotFound) {
			return err
		}
		s.close()
		if !kept || retried || !errors.Is(err, ErrNotRunning) || ctx.Err() != nil {
			return err
		}
	}
}

func (s *session) close() {
	if s.conn != nil {
		s.conn.Close()
		s.conn = nil
	}
}

func query(ctx context.Context, c *rpcConn, port string) (Port, error) {
	eq := func(col, v string) []any { return []any{[]any{col, "==", v}} }
	res, err := c.transact(ctx,
		map[string]any{"op": "select", "table": "Port", "where": eq("name", port), "columns": []string{"_uuid", "name", "tag", "trunks", "vlan_mode"}},
		map[string]any{"op": "select", "table": "Interface", "where": eq("name", port), "columns": []string{"name", "ofport", "error"}},
	)
	if err != nil {
		return Port{}, err
	}
	if len(res[0]) == 0 {
		return Port{}, fmt.Errorf("no port named %s: %w", port, ErrPortNotFound)
	}
	if len(res[1]) == 0 {
		return Port{}, fmt.Errorf("no interface named %s: %w", port, ErrPortNotFound)
	}
	if len(res[0]) > 1 || len(res[1]) > 1 {
		return Port{}, fmt.Errorf("%w: %d ports, %d interfaces named %s", ErrCommand, len(res[0]), len(res[1]), port)
	}
	var uuid []any
	if err := json.Unmarshal(res[0][0]["_uuid"], &uuid); err != nil || len(uuid) != 2 {
		return Port{}, fmt.Errorf("%w: Port _uuid %s", ErrCommand, res[0][0]["_uuid"])
	}
	br, err := c.transact(ctx, map[string]any{"op": "select", "table": "Bridge",
		"where": []any{[]any{"ports", "includes", uuid}}, "columns": []string{"name"}})
	if err != nil {
		return Port{}, err
	}
	if len(br[0]) != 1 {
		return Port{}, fmt.Errorf("port %s is in %d bridges: %w", port, len(br[0]), ErrPortNotFound)
	}
	bridge, err := str(br[0][0], "name", false)
	if err != nil {
		return Port{}, err
	}
	if bridge == port {
		// The bridge's own internal port (OpenFlow LOCAL), which
		// ovs-vsctl does not list as a port either: never a VM's.
		return Port{}, fmt.Errorf("%s is bridge %s's own internal port, no port named %s: %w", port, bridge, port, ErrPortNotFound)
	}
	return portFromRows(bridge, res[0][0], res[1][0])
}

// Close closes the connection.
func (d *OVSDB) Close() error {
	d.once.Do(func() { d.sem = make(chan struct{}, 1) })
	d.sem <- struct{}{}
	defer func() { <-d.sem }()
	d.s.close()
	return nil
}

// ovsdbError is an error the server returned for a request or operation.
type ovsdbError struct{ msg string }

func (e *ovsdbError) Error() string { return "ovsdb: " + e.msg }
func (e *ovsdbError) Unwrap() error { return ErrCommand }

// rpcConn is a JSON-RPC 1.0 connection to ovsdb-server. Requests are
// serialized by OVSDB.sem; the server's own "echo" requests (inactivity
// probes on tcp connections) are answered while waiting.
type rpcConn struct {
	c   net.Conn
	dec *json.Decoder
	id  int
}

func dialOVSDB(ctx context.Context, socket string) (*rpcConn, error) {
	network, addr, err := splitSocket(socket)
	if err != nil {
		return nil, err
	}
	var d net.Dialer
	c, err := d.DialContext(ctx, network, addr)
	if err != nil {
		if ctx.Err() != nil {
			return nil, fmt.Errorf("connect %s: %w", socket, ErrTimeout)
		}
		return nil, fmt.Errorf("connect %s: %w", socket, dialError(err))
	}
	return &rpcConn{c: c, dec: json.NewDecoder(c)}, nil
}

// splitSocket turns --db syntax into a net.Dial network and address.
func splitSocket(socket string) (string, string, error) {
	if socket == "" {
		return "unix", filepath.Join(DefaultRunDir(), "db.sock"), nil
	}
	scheme, addr, ok := strings.Cut(socket, ":")
	switch {
	case !ok || addr == "":
	case scheme == "unix":
		return "unix", addr, nil
	case scheme == "tcp":
		return "tcp", addr, nil
	}
	return "", "", fmt.Errorf("ovsdb socket %q: want unix:PATH or tcp:HOST:PORT (use the ovs-vsctl lookup for others): %w", socket, ErrCommand)
}

func (r *rpcConn) Close() error { return r.c.Close() }

type rpcMessage struct {
	ID     json.RawMessage `json:"id"`
	Method string          `json:"method,omitempty"`
	Params json.RawMessage `json:"params,omitempty"`
	Result json.RawMessage `json:"result,omitempty"`
	Error  json.RawMessage `json:"error,omitempty"`
}

// transact runs ops (selects) in one transaction and returns each one's
// rows.
func (r *rpcConn) transact(ctx context.Context, ops ...map[string]any) ([][]row, error) {
	if dl, ok := ctx.Deadline(); ok {
		_ = r.c.SetDeadline(dl)
	}
	r.id++
	params := append([]any{"Open_vSwitch"}, anySlice(ops)...)
	req, err := json.Marshal(map[string]any{"method": "transact", "params": params, "id": r.id})
	if err != nil {
		return nil, err
	}
	if _, err := r.c.Write(req); err != nil {
		return nil, dialError(err)
	}
	want := fmt.Sprint(r.id)
	for {
		var m rpcMessage
		if err := r.dec.Decode(&m); err != nil {
			if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
				return nil, fmt.Errorf("ovsdb-server closed the connection: %w", ErrNotRunning)
			}
			if errors.Is(err, os.ErrDeadlineExceeded) {
				return nil, fmt.Errorf("no reply: %w", ErrTimeout)
			}
			var syn *json.SyntaxError
			if errors.As(err, &syn) {
				return nil, fmt.Errorf("%w: reply is not JSON: %v", ErrCommand, err)
			}
			return nil, dialError(err)
		}
		if m.Method == "echo" {
			reply, _ := json.Marshal(map[string]any{"id": m.ID, "result": m.Params, "error": nil})
			if _, err := r.c.Write(reply); err != nil {
				return nil, dialError(err)
			}
			continue
		}
		if m.Method != "" || string(m.ID) != want {
			continue // a notification or a stale reply: not ours
		}
		return parseTransact(m, len(ops))
	}
}

func anySlice[T any](s []T) []any {
	out := make([]any, len(s))
	for i, v := range s {
		out[i] = v
	}
	return out
}

// parseTransact reads a transact reply: one {"rows":[...]} per operation,
// or an error for the request or an operation.
func parseTransact(m rpcMessage, nops int) ([][]row, error) {
	if len(m.Error) > 0 && string(m.Error) != "null" {
		return nil, &ovsdbError{string(m.Error)}
	}
	var results []struct {
		Rows    []row  `json:"rows"`
		Error   string `json:"error"`
		Details string `json:"details"`
	}
	if err := json.Unmarshal(m.Result, &results); err != nil {
		return nil, fmt.Errorf("%w: transact result: %v", ErrCommand, err)
	}
	// A failed operation's error may come in place of its result, with
	// the operations after it left out or null: look for errors first.
	for _, r := range results {
		if r.Error != "" {
			return nil, &ovsdbError{r.Error + ": " + r.Details}
		}
	}
	if len(results) < nops {
		return nil, fmt.Errorf("%w: %d results for %d operations", ErrCommand, len(results), nops)
	}
	out := make([][]row, nops)
	for i := range nops {
		out[i] = results[i].Rows
	}
	return out, nil
}
