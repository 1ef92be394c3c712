package sign

import (
	"fmt"
)

// ABIExport is the export whose value is the plugin ABI version.
const ABIExport = "kmeter_abi_version"

// External kinds of imports and exports.
const (
	KindFunc   = 0
	KindTable  = 1
	KindMemory = 2
	KindGlobal = 3
	KindTag    = 4
)

// KindName names an external kind ("func", "table", ...).
func KindName(k byte) string {
	switch k {
	case KindFunc:
		return "func"
	case KindTable:
		return "table"
	case KindMemory:
		return "memory"
	case KindGlobal:
		return "global"
	case KindTag:
		return "tag"
	}
	return fmt.Sprintf("kind(0x%02x)", k)
}

// Import is one import of a module.
type Import struct {
	Module, Name string
	Kind         byte
}

// Export is one export of a module.
type Export struct {
	Name  string
	Kind  byte
	Index uint32
}

// ABIVersion is what a module says about its plugin ABI version.
type ABIVersion struct {
	// Present is true when the module exports kmeter_abi_version.
	Present bool
	// Kind is the kind of that export: [KindGlobal] or [KindFunc].
	Kind byte
	// Value is the version when the export is a global initialised with
	// an i32/i64 constant (Known is then true). A function's value is only
	// known by calling it, which inspection never does.
	Value int64
	Known bool
}

// Info is a static description of a module; nothing in it is executed.
type Info struct {
	Imports        []Import
	Exports        []Export
	CustomSections []string
	ABI            ABIVersion
}

// Inspect parses the import, global and export sections of module.
func Inspect(module []byte) (Info, error) {
	secs, err := Sections(module)
	if err != nil {
		return Info{}, err
	}
	var info Info
	var importedGlobals uint32
	var globals []constValue
	for _, s := range secs {
		r := reader{b: s.Payload}
		switch s.ID {
		case CustomSectionID:
			info.CustomSections = append(info.CustomSections, s.Name)
		case 2:
			if info.Imports, importedGlobals, err = parseImports(&r); err != nil {
				return Info{}, fmt.Errorf("%w: import section: %v", ErrMalformed, err)
			}
		case 6:
			if globals, err = parseGlobals(&r); err != nil {
				return Info{}, fmt.Errorf("%w: global section: %v", ErrMalformed, err)
			}
		case 7:
			if info.Exports, err = parseExports(&r); err != nil {
				return Info{}, fmt.Errorf("%w: export section: %v", ErrMalformed, err)
			}
		}
	}
	for _, e := range info.Exports {
		if e.Name != ABIExport {
			continue
		}
		info.ABI = ABIVersion{Present: true, Kind: e.Kind}
		if e.Kind == KindGlobal && e.Index >= importedGlobals {
			if i := e.Index - importedGlobals; uint64(i) < uint64(len(globals)) && globals[i].known {
				info.ABI.Value, info.ABI.Known = globals[i].v, true
			}
		}
	}
	return info, nil
}

func (r *reader) name() (string, error) {
	b, err := r.slice()
	return string(b), err
}

func parseImports(r *reader) ([]Import, uint32, error) {
	n, err := r.uvarint()
	if err != nil {
		return nil, 0, err
	}
	var out []Import
	var globals uint32
	for i := uint32(0); i < n; i++ {
		var im Import
		if im.Module, err = r.name(); err != nil {
			return nil, 0, fmt.Errorf("import %d module name: %v", i, err)
		}
		if im.Name, err = r.name(); err != nil {
			return nil, 0, fmt.Errorf("import %d name: %v", i, err)
		}
		if im.Kind, err = r.byte(); err != nil {
			return nil, 0, err
		}
		switch im.Kind {
		case KindFunc:
			_, err = r.uvarint()
		case KindTable:
			if _, err = r.byte(); err == nil {
				err = r.limits()
			}
		case KindMemory:
			err = r.limits()
		case KindGlobal:
			globals++
			if _, err = r.byte(); err == nil {
				_, err = r.byte()
			}
		case KindTag:
			if _, err = r.byte(); err == nil {
				_, err = r.uvarint()
			}
		default:
			err = fmt.Errorf("unknown import kind 0x%02x", im.Kind)
		}
		if err != nil {
			return nil, 0, fmt.Errorf("import %d (%s.%s): %v", i, im.Module, im.Name, err)
		}
		out = append(out, im)
	}
	return out, globals, nil
}

// limits skips a limits record (flags, min, optional max); 64-bit
// memories use up to 10-byte varints.
func (r *reader) limits() error {
	flags, err := r.byte()
	if err != nil {
		return err
	}
	if flags > 7 {
		return fmt.Errorf("unknown limits flags 0x%02x", flags)
	}
	n := 1
	if flags&1 != 0 {
		n = 2
	}
	for ; n > 0; n-- {
		if err := r.skipVarint(10); err != nil {
			return err
		}
	}
	return nil
}

func (r *reader) skipVarint(max int) error {
	for i := 0; i < max; i++ {
		c, err := r.byte()
		if err != nil {
			return err
		}
		if c&0x80 == 0 {
			return nil
		}
	}
	return fmt.Errorf("varint longer than %d bytes", max)
}

// svarint reads a signed LEB128 value of at most 64 bits.
func (r *reader) svarint() (int64, error) {
	var v int64
	var shift uint
	for i := 0; i < 10; i++ {
		c, err := r.byte()
		if err != nil {
			return 0, err
		}
		v |= int64(c&0x7f) << shift
		shift += 7
		if c&0x80 == 0 {
			if shift < 64 && c&0x40 != 0 {
				v |= -1 << shift
			}
			return v, nil
		}
	}
	return 0, fmt.Errorf("signed varint longer than 10 bytes")
}

type constValue struct {
	v     int64
	known bool
}

func parseGlobals(r *reader) ([]constValue, error) {
	n, err := r.uvarint()
	if err != nil {
		return nil, err
	}
	var out []constValue
	for i := uint32(0); i < n; i++ {
		if _, err := r.byte(); err != nil { // value type
			return nil, err
		}
		if _, err := r.byte(); err != nil { // mutability
			return nil, err
		}
		cv, err := r.constExpr()
		if err != nil {
			return nil, fmt.Errorf("global %d: %v", i, err)
		}
		out = append(out, cv)
	}
	return out, nil
}

// constExpr reads a constant expression up to its end opcode. The value
// is known only for a lone i32.const or i64.const.
func (r *reader) constExpr() (constValue, error) {
	var cv constValue
	for ops := 0; ; ops++ {
		op, err := r.byte()
		if err != nil {
			return cv, err
		}
		switch op {
		case 0x0b: // end
			if ops != 1 {
				cv.known = false
			}
			return cv, nil
		case 0x41, 0x42: // i32.const, i64.const
			v, err := r.svarint()
			if err != nil {
				return cv, err
			}
			if op == 0x41 {
				v = int64(int32(v))
			}
			cv = constValue{v: v, known: true}
		case 0x23, 0xd2: // global.get, ref.func
			_, err = r.uvarint()
		case 0xd0: // ref.null
			_, err = r.byte()
		case 0x43: // f32.const
			_, err = r.take(4)
		case 0x44: // f64.const
			_, err = r.take(8)
		case 0xfd: // v128.const
			var sub uint32
			if sub, err = r.uvarint(); err == nil && sub != 12 {
				err = fmt.Errorf("unsupported SIMD opcode %d in a constant expression", sub)
			} else if err == nil {
				_, err = r.take(16)
			}
		case 0x6a, 0x6b, 0x6c, 0x7c, 0x7d, 0x7e: // extended-const arithmetic
		default:
			err = fmt.Errorf("unsupported opcode 0x%02x in a constant expression", op)
		}
		if err != nil {
			return cv, err
		}
	}
}

func parseExports(r *reader) ([]Export, error) {
	n, err := r.uvarint()
	if err != nil {
		return nil, err
	}
	var out []Export
	for i := uint32(0); i < n; i++ {
		var e Export
		if e.Name, err = r.name(); err != nil {
			return nil, fmt.Errorf("export %d name: %v", i, err)
		}
		if e.Kind, err = r.byte(); err != nil {
			return nil, err
		}
		if e.Index, err = r.uvarint(); err != nil {
			return nil, err
		}
		out = append(out, e)
	}
	return out, nil
}
