//go:build wasip1

package kmeter

import "unsafe"

// Buffers live in package variables so the garbage collector keeps them
// while the host reads and writes them between calls.
var inBuf, outBuf []byte

//go:wasmexport kmeter_abi_version
func abiVersion() int32 { return 1 } // Keep in sync with abi.Version.

//go:wasmexport kmeter_alloc
func alloc(size uint32) uint32 {
	if cap(inBuf) < int(size) {
		inBuf = make([]byte, size)
	}
	inBuf = inBuf[:size]
	if size == 0 {
		return 0
	}
	return uint32(uintptr(unsafe.Pointer(&inBuf[0])))
}

//go:wasmexport kmeter_price
func price(ptr, size uint32) int64 {
	if size > uint32(len(inBuf)) || (size > 0 && ptr != uint32(uintptr(unsafe.Pointer(&inBuf[0])))) {
		return -1
	}
	out, err := priceBatch(inBuf[:size], outBuf)
	if err != nil {
		logErr(err.Error())
		return -2
	}
	outBuf = out
	return int64(uintptr(unsafe.Pointer(&outBuf[0])))<<32 | int64(len(outBuf))
}

//go:wasmimport kmeter log
func hostLog(level int32, ptr unsafe.Pointer, size uint32)

func logErr(msg string) {
	b := []byte(msg)
	hostLog(2, unsafe.Pointer(&b[0]), uint32(len(b)))
}
