package logging

import (
	"fmt"
	"os"

	"go.uber.org/zap/buffer"
	"go.uber.org/zap/zapcore"
	"golang.org/x/sys/unix"
)

// Under systemd, stderr is a stream to journald, which gives every line
// the unit's default priority (info) unless the line starts with a
// syslog priority prefix "<N>" (sd-daemon(3), SyslogLevelPrefix=, on by
// default). Without the prefix "journalctl -p warning" would show no
// error at all. The prefix is added only when stderr really is the
// journal: systemd sets JOURNAL_STREAM to the stream's "device:inode",
// and a process whose stderr was redirected elsewhere (a pipe to a file,
// a terminal) inherits the variable but not the stream.

// journalStderr reports whether stderr is the stream named by
// JOURNAL_STREAM.
func journalStderr() bool {
	return isJournal(os.Getenv("JOURNAL_STREAM"), int(os.Stderr.Fd()))
}

func isJournal(env string, fd int) bool {
	if env == "" {
		return false
	}
	var dev, ino uint64
	if n, err := fmt.Sscanf(env, "%d:%d", &dev, &ino); n != 2 || err != nil {
		return false
	}
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return false
	}
	return uint64(st.Dev) == dev && st.Ino == ino
}

// priority maps a zap level to a syslog priority (syslog(3)).
func priority(l zapcore.Level) byte {
	switch {
	case l <= zapcore.DebugLevel:
		return '7' // LOG_DEBUG
	case l == zapcore.InfoLevel:
		return '6' // LOG_INFO
	case l == zapcore.WarnLevel:
		return '4' // LOG_WARNING
	case l == zapcore.ErrorLevel:
		return '3' // LOG_ERR
	default:
		return '2' // LOG_CRIT: DPanic, Panic, Fatal
	}
}

var pool = buffer.NewPool()

// priorityEncoder prefixes each encoded entry with "<N>".
type priorityEncoder struct{ zapcore.Encoder }

func (e priorityEncoder) Clone() zapcore.Encoder { return priorityEncoder{e.Encoder.Clone()} }

func (e priorityEncoder) EncodeEntry(ent zapcore.Entry, fields []zapcore.Field) (*buffer.Buffer, error) {
	line, err := e.Encoder.EncodeEntry(ent, fields)
	if err != nil {
		return nil, err
	}
	out := pool.Get()
	out.AppendByte('<')
	out.AppendByte(priority(ent.Level))
	out.AppendByte('>')
	_, _ = out.Write(line.Bytes())
	line.Free()
	return out, nil
}
