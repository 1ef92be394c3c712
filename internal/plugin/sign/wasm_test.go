package sign

import (
	"errors"
	"testing"
)

func TestSections(t *testing.T) {
	secs, err := Sections(pluginWasm)
	if err != nil {
		t.Fatal(err)
	}
	var ids []byte
	for _, s := range secs {
		ids = append(ids, s.ID)
	}
	// type, import, function, memory, global, export, code
	want := []byte{1, 2, 3, 5, 6, 7, 10}
	if string(ids) != string(want) {
		t.Fatalf("section ids = %v, want %v", ids, want)
	}
	end := 8
	for _, s := range secs {
		if s.Offset != end {
			t.Fatalf("section %d at %d, want %d", s.ID, s.Offset, end)
		}
		end += len(s.Raw)
	}
	if end != len(pluginWasm) {
		t.Fatalf("sections end at %d, module is %d bytes", end, len(pluginWasm))
	}
}

func TestSections_malformed(t *testing.T) {
	h := []byte{0, 'a', 's', 'm', 1, 0, 0, 0}
	tests := []struct {
		name string
		in   []byte
	}{
		{"short", h[:6]},
		{"bad magic", []byte("\x7fELF\x01\x00\x00\x00")},
		{"component", []byte{0, 'a', 's', 'm', 0x0d, 0, 1, 0}},
		{"missing size", append(h, 1)},
		{"size past end", append(h, 1, 5, 0)},
		{"size overflow", append(h, 1, 0xff, 0xff, 0xff, 0xff, 0x7f)},
		{"custom name past end", append(h, 0, 2, 5, 'a')},
		{"custom without name", append(h, 0, 0)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := Sections(tt.in); !errors.Is(err, ErrMalformed) {
				t.Fatalf("Sections(%x) = %v, want ErrMalformed", tt.in, err)
			}
		})
	}
}

func TestUvarint32(t *testing.T) {
	tests := []struct {
		in   []byte
		want uint32
		n    int
		ok   bool
	}{
		{[]byte{0}, 0, 1, true},
		{[]byte{0x7f}, 127, 1, true},
		{[]byte{0x80, 0x01}, 128, 2, true},
		{[]byte{0xe5, 0x8e, 0x26}, 624485, 3, true},
		{[]byte{0xff, 0xff, 0xff, 0xff, 0x0f}, 0xffffffff, 5, true},
		{[]byte{0xff, 0xff, 0xff, 0xff, 0x1f}, 0, 0, false},
		{[]byte{0x80, 0x80, 0x80, 0x80, 0x80, 0x00}, 0, 0, false},
		{[]byte{0x80}, 0, 0, false},
	}
	for _, tt := range tests {
		v, n, err := uvarint32(tt.in)
		if (err == nil) != tt.ok || v != tt.want || n != tt.n {
			t.Errorf("uvarint32(%x) = %d, %d, %v; want %d, %d, ok=%v", tt.in, v, n, err, tt.want, tt.n, tt.ok)
		}
		if tt.ok && tt.n == len(tt.in) {
			if got := appendUvarint(nil, uint64(tt.want)); string(got) != string(tt.in) {
				t.Errorf("appendUvarint(%d) = %x, want %x", tt.want, got, tt.in)
			}
		}
	}
}
