package deploy

import (
	"bytes"
	"compress/gzip"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
)

// A minimal reader for the .rpm files nfpm writes, so the package test can
// check the RPM without rpm(8) installed: header tags, the file list with
// modes and %config flags, and the gzip'd cpio payload.

const (
	rpmTagName       = 1000
	rpmTagVersion    = 1001
	rpmTagRelease    = 1002
	rpmTagLicense    = 1014
	rpmTagArch       = 1022
	rpmTagPostin     = 1024
	rpmTagPreun      = 1025
	rpmTagFileModes  = 1030
	rpmTagFileFlags  = 1037
	rpmTagFileUser   = 1039
	rpmTagFileGroup  = 1040
	rpmTagDirIndexes = 1116
	rpmTagBaseNames  = 1117
	rpmTagDirNames   = 1118
	rpmTagCompressor = 1125

	rpmFileConfig    = 1 << 0
	rpmFileNoReplace = 1 << 4
)

type rpmFile struct {
	Mode        os.FileMode
	Flags       uint32
	User, Group string
	Data        []byte // from the payload; nil for directories
}

type rpmPackage struct {
	Tags  map[int32]any // string, []string, []int32 or []int16
	Files map[string]*rpmFile
}

func (p *rpmPackage) str(tag int32) string {
	switch v := p.Tags[tag].(type) {
	case string:
		return v
	case []string:
		if len(v) > 0 {
			return v[0]
		}
	}
	return ""
}

// readRPMHeader reads one header structure (magic 8e ad e8 01) at r.
func readRPMHeader(r io.Reader) (map[int32]any, int, error) {
	var pre [16]byte
	if _, err := io.ReadFull(r, pre[:]); err != nil {
		return nil, 0, err
	}
	if !bytes.Equal(pre[:4], []byte{0x8e, 0xad, 0xe8, 0x01}) {
		return nil, 0, fmt.Errorf("bad header magic % x", pre[:4])
	}
	n := binary.BigEndian.Uint32(pre[8:])
	size := binary.BigEndian.Uint32(pre[12:])
	if n > 1<<16 || size > 1<<28 {
		return nil, 0, fmt.Errorf("header too large: %d entries, %d bytes", n, size)
	}
	index := make([]byte, 16*n)
	store := make([]byte, size)
	if _, err := io.ReadFull(r, index); err != nil {
		return nil, 0, err
	}
	if _, err := io.ReadFull(r, store); err != nil {
		return nil, 0, err
	}
	tags := map[int32]any{}
	for i := range n {
		e := index[16*i:]
		tag := int32(binary.BigEndian.Uint32(e))
		typ := binary.BigEndian.Uint32(e[4:])
		off := binary.BigEndian.Uint32(e[8:])
		count := binary.BigEndian.Uint32(e[12:])
		if off > size {
			return nil, 0, fmt.Errorf("tag %d: offset %d past the store", tag, off)
		}
		d := store[off:]
		switch typ {
		case 3: // INT16
			v := make([]int16, count)
			for j := range v {
				v[j] = int16(binary.BigEndian.Uint16(d[2*j:]))
			}
			tags[tag] = v
		case 4: // INT32
			v := make([]int32, count)
			for j := range v {
				v[j] = int32(binary.BigEndian.Uint32(d[4*j:]))
			}
			tags[tag] = v
		case 6: // STRING
			s, _, _ := bytes.Cut(d, []byte{0})
			tags[tag] = string(s)
		case 8, 9: // STRING_ARRAY, I18NSTRING
			v := make([]string, count)
			for j := range v {
				var s []byte
				s, d, _ = bytes.Cut(d, []byte{0})
				v[j] = string(s)
			}
			tags[tag] = v
		}
	}
	return tags, 16 + len(index) + len(store), nil
}

func readRPM(path string) (*rpmPackage, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	if len(b) < 96 || !bytes.Equal(b[:4], []byte{0xed, 0xab, 0xee, 0xdb}) {
		return nil, errors.New("not an RPM (lead magic)")
	}
	r := bytes.NewReader(b[96:])
	_, sigLen, err := readRPMHeader(r)
	if err != nil {
		return nil, fmt.Errorf("signature header: %w", err)
	}
	if pad := (8 - sigLen%8) % 8; pad > 0 { // the signature is padded to 8 bytes
		if _, err := r.Seek(int64(pad), io.SeekCurrent); err != nil {
			return nil, err
		}
	}
	tags, _, err := readRPMHeader(r)
	if err != nil {
		return nil, fmt.Errorf("main header: %w", err)
	}
	p := &rpmPackage{Tags: tags, Files: map[string]*rpmFile{}}
	base, _ := tags[rpmTagBaseNames].([]string)
	dirs, _ := tags[rpmTagDirNames].([]string)
	dirIdx, _ := tags[rpmTagDirIndexes].([]int32)
	modes, _ := tags[rpmTagFileModes].([]int16)
	flags, _ := tags[rpmTagFileFlags].([]int32)
	users, _ := tags[rpmTagFileUser].([]string)
	groups, _ := tags[rpmTagFileGroup].([]string)
	for i, name := range base {
		if i >= len(dirIdx) || int(dirIdx[i]) >= len(dirs) || i >= len(modes) || i >= len(flags) || i >= len(users) || i >= len(groups) {
			return nil, fmt.Errorf("file %d (%s): file tags of different lengths", i, name)
		}
		m := uint32(uint16(modes[i]))
		mode := os.FileMode(m & 0o777)
		if m&0o170000 == 0o040000 {
			mode |= os.ModeDir
		}
		p.Files[dirs[dirIdx[i]]+name] = &rpmFile{Mode: mode, Flags: uint32(flags[i]), User: users[i], Group: groups[i]}
	}
	if c := p.str(rpmTagCompressor); c != "gzip" {
		return nil, fmt.Errorf("payload compressor %q: this reader knows gzip only", c)
	}
	zr, err := gzip.NewReader(r)
	if err != nil {
		return nil, fmt.Errorf("payload: %w", err)
	}
	payload, err := io.ReadAll(zr)
	if err != nil {
		return nil, fmt.Errorf("payload: %w", err)
	}
	return p, p.readCpio(payload)
}

// readCpio reads a "newc" cpio archive and attaches file data to p.Files.
func (p *rpmPackage) readCpio(b []byte) error {
	align := func(n int) int { return (n + 3) &^ 3 }
	for off := 0; ; {
		if len(b)-off < 110 || string(b[off:off+6]) != "070701" {
			return fmt.Errorf("cpio: bad header at %d", off)
		}
		field := func(i int) (int, error) {
			v, err := strconv.ParseUint(string(b[off+6+8*i:off+14+8*i]), 16, 32)
			return int(v), err
		}
		size, err1 := field(6)
		nameSize, err2 := field(11)
		if err := errors.Join(err1, err2); err != nil {
			return fmt.Errorf("cpio at %d: %w", off, err)
		}
		nameEnd := off + 110 + nameSize
		dataOff := align(nameEnd)
		if nameSize < 1 || dataOff+size > len(b) {
			return fmt.Errorf("cpio at %d: entry past the end", off)
		}
		name := string(b[off+110 : nameEnd-1])
		if name == "TRAILER!!!" {
			return nil
		}
		name = "/" + strings.TrimPrefix(strings.TrimPrefix(name, "."), "/")
		f := p.Files[name]
		if f == nil {
			return fmt.Errorf("cpio: %s is in the payload but not in the header", name)
		}
		if !f.Mode.IsDir() {
			f.Data = b[dataOff : dataOff+size]
		}
		off = align(dataOff + size)
	}
}
