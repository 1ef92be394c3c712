// Package sign reads and writes WebAssembly module signatures in the
// format of the WebAssembly tool-conventions (Signatures.md), the format
// wasmsign2 produces: a first custom section named "signature" holding
// Ed25519 signatures over the SHA-256 of every section after it.
//
// The package works on whole modules in memory and never executes or
// compiles them, so it is safe to run on untrusted input: every parser in
// it returns an error, never panics, on malformed bytes.
package sign

import (
	"bytes"
	"errors"
	"fmt"
)

// header is the preamble of every core WebAssembly module: "\0asm" and
// binary format version 1.
var header = []byte{0x00, 0x61, 0x73, 0x6d, 0x01, 0x00, 0x00, 0x00}

// ErrMalformed reports bytes that are not a well-formed WebAssembly module
// or signature section.
var ErrMalformed = errors.New("malformed module")

// CustomSectionID is the section id of custom sections.
const CustomSectionID = 0

// Section is one section of a module as it appears in the file.
type Section struct {
	// ID is the section id (0 for custom sections).
	ID byte
	// Name is the name of a custom section, empty for other sections.
	Name string
	// Payload is the section content; for custom sections it excludes the
	// name.
	Payload []byte
	// Raw is the whole encoded section: id, size and content. Hashes are
	// computed over Raw so that a module is verified exactly as stored.
	Raw []byte
	// Offset is where Raw starts in the module.
	Offset int
}

// Sections splits a module into its sections without interpreting them
// (except custom section names). The returned slices alias module.
func Sections(module []byte) ([]Section, error) {
	if len(module) < len(header) || !bytes.Equal(module[:4], header[:4]) {
		return nil, fmt.Errorf("%w: missing the \\0asm magic, not a WebAssembly module", ErrMalformed)
	}
	if !bytes.Equal(module[4:8], header[4:8]) {
		return nil, fmt.Errorf("%w: binary version %x, only core modules (version 1) are supported", ErrMalformed, module[4:8])
	}
	var out []Section
	off := len(header)
	for off < len(module) {
		start := off
		id := module[off]
		off++
		size, n, err := uvarint32(module[off:])
		if err != nil {
			return nil, fmt.Errorf("%w: section at offset %d: size: %v", ErrMalformed, start, err)
		}
		off += n
		if uint64(size) > uint64(len(module)-off) {
			return nil, fmt.Errorf("%w: section at offset %d: size %d runs past the end of the module", ErrMalformed, start, size)
		}
		content := module[off : off+int(size)]
		off += int(size)
		s := Section{ID: id, Payload: content, Raw: module[start:off], Offset: start}
		if id == CustomSectionID {
			name, rest, err := readName(content)
			if err != nil {
				return nil, fmt.Errorf("%w: custom section at offset %d: name: %v", ErrMalformed, start, err)
			}
			s.Name, s.Payload = name, rest
		}
		out = append(out, s)
	}
	return out, nil
}

// EncodeCustomSection returns the encoded custom section name/payload.
func EncodeCustomSection(name string, payload []byte) []byte {
	inner := appendUvarint(nil, uint64(len(name)))
	inner = append(inner, name...)
	inner = append(inner, payload...)
	out := []byte{CustomSectionID}
	out = appendUvarint(out, uint64(len(inner)))
	return append(out, inner...)
}

// CustomSection returns the payload of the first custom section called
// name, and whether there was one.
func CustomSection(module []byte, name string) ([]byte, bool, error) {
	secs, err := Sections(module)
	if err != nil {
		return nil, false, err
	}
	for _, s := range secs {
		if s.ID == CustomSectionID && s.Name == name {
			return s.Payload, true, nil
		}
	}
	return nil, false, nil
}

// SetCustomSection returns a copy of module in which the custom section
// called name holds payload. An existing section of that name is
// replaced; otherwise the section is inserted first, or right after the
// signature section when there is one, so a later [Sign] covers it. It
// must not be used for the signature section itself.
func SetCustomSection(module []byte, name string, payload []byte) ([]byte, error) {
	if name == SignatureSectionName {
		return nil, fmt.Errorf("set custom section: %q is reserved for signatures, use Sign", name)
	}
	secs, err := Sections(module)
	if err != nil {
		return nil, err
	}
	enc := EncodeCustomSection(name, payload)
	out := append(make([]byte, 0, len(module)+len(enc)), header...)
	placed := false
	for i, s := range secs {
		if s.ID == CustomSectionID && s.Name == name {
			if !placed {
				out = append(out, enc...)
				placed = true
			}
			continue
		}
		if !placed && !(i == 0 && s.ID == CustomSectionID && s.Name == SignatureSectionName) {
			out = append(out, enc...)
			placed = true
		}
		out = append(out, s.Raw...)
	}
	if !placed {
		out = append(out, enc...)
	}
	return out, nil
}

func readName(b []byte) (string, []byte, error) {
	n, k, err := uvarint32(b)
	if err != nil {
		return "", nil, err
	}
	b = b[k:]
	if uint64(n) > uint64(len(b)) {
		return "", nil, fmt.Errorf("length %d runs past the end", n)
	}
	return string(b[:n]), b[n:], nil
}

// uvarint32 decodes an unsigned LEB128 value of at most 32 bits, as the
// WebAssembly binary format and the signature format use for lengths.
func uvarint32(b []byte) (uint32, int, error) {
	var v uint32
	for i := 0; i < 5; i++ {
		if i >= len(b) {
			return 0, 0, errors.New("truncated varint")
		}
		c := b[i]
		if i == 4 && c&0xf0 != 0 {
			return 0, 0, errors.New("varint overflows 32 bits")
		}
		v |= uint32(c&0x7f) << (7 * i)
		if c&0x80 == 0 {
			return v, i + 1, nil
		}
	}
	return 0, 0, errors.New("varint longer than 5 bytes")
}

func appendUvarint(b []byte, v uint64) []byte {
	for {
		c := byte(v & 0x7f)
		v >>= 7
		if v != 0 {
			b = append(b, c|0x80)
			continue
		}
		return append(b, c)
	}
}
