// kmeter.ts - AssemblyScript guest SDK for kmeter pricing plugins, ABI v1
// (docs/plugin-abi.md). It works on raw linear memory with load/store and
// a bump allocator, so a plugin needs no garbage collector and no imports
// (build with --runtime stub --use abort=).
//
// A plugin re-exports kmeter_abi_version and kmeter_alloc from here and
// defines kmeter_price with beginCharges / setCharge / finishCharges.

// Keep in sync with Version in sdk/go/abi/abi.go.
export const ABI_VERSION: i32 = 1;

// Wire constants. Keep in sync with sdk/go/abi/abi.go.
const BATCH_MAGIC: u32 = 0x31424d4b; // "KMB1"
const CHARGES_MAGIC: u32 = 0x31434d4b; // "KMC1"
const RECORD_SIZE: usize = 48;
const CHARGE_SIZE: usize = 24;
const USD: u64 = 0x445355; // "USD" as 8 little-endian bytes

// Error codes kmeter_price may return; the host fails the whole batch.
export const ERR_MALFORMED: i64 = -1;
export const ERR_REFUSED: i64 = -2;
export const ERR_NOMEM: i64 = -3;
export const ERR_OVERFLOW: i64 = -4;

let top: usize = 0;
let inputEnd: usize = 0;

function bump(size: usize): usize {
  const p = (top + 7) & ~(<usize>7);
  const end = p + size;
  const have = (<usize>memory.size()) << 16;
  if (end > have) {
    const pages = <i32>((end - have + 0xffff) >> 16);
    if (memory.grow(pages) < 0) return 0;
  }
  top = end;
  return p;
}

export function kmeter_abi_version(): i32 {
  return ABI_VERSION;
}

// kmeter_alloc frees everything and reserves the input buffer. The host
// may write later batches into the same buffer without calling it again
// (ABI v1, "Memory"), so beginCharges frees only what lies after it.
export function kmeter_alloc(size: u32): usize {
  top = __heap_base;
  const p = bump(<usize>size);
  inputEnd = top;
  return p;
}

// recordCount returns the number of records, or -1 if the batch is not a
// well-formed ABI v1 batch of len bytes.
export function recordCount(batch: usize, len: u32): i32 {
  if (len < 16 || load<u32>(batch) != BATCH_MAGIC) return -1;
  const n = <u64>load<u32>(batch, 4);
  const na = <u64>load<u32>(batch, 8);
  const ns = <u64>load<u32>(batch, 12);
  if (16 + n * 48 + na * 16 + ns != <u64>len) return -1;
  return <i32>n;
}

// quantity returns record i's quantity.
export function quantity(batch: usize, i: i32): u64 {
  return load<u64>(batch + 16 + <usize>i * RECORD_SIZE, 16);
}

// meterIs reports whether record i's meter equals the ASCII string s.
export function meterIs(batch: usize, i: i32, s: string): bool {
  const r = batch + 16 + <usize>i * RECORD_SIZE;
  const n = <usize>load<u32>(batch, 4);
  const na = <usize>load<u32>(batch, 8);
  const strs = batch + 16 + n * RECORD_SIZE + na * 16;
  const off = <usize>load<u32>(r, 8);
  const len = load<u32>(r, 12);
  if (<i32>len != s.length) return false;
  for (let j: i32 = 0; j < s.length; j++) {
    if (<i32>load<u8>(strs + off + <usize>j) != s.charCodeAt(j)) return false;
  }
  return true;
}

// beginCharges reserves the output for n charges (all zero, USD) and
// returns its address, or 0 when out of memory.
export function beginCharges(n: i32): usize {
  top = inputEnd;
  const out = bump(8 + <usize>n * CHARGE_SIZE);
  if (out == 0) return 0;
  store<u32>(out, CHARGES_MAGIC);
  store<u32>(out, <u32>n, 4);
  for (let i: i32 = 0; i < n; i++) {
    const c = out + 8 + <usize>i * CHARGE_SIZE;
    store<i64>(c, 0);
    store<i64>(c, 0, 8);
    store<u64>(c, USD, 16);
  }
  return out;
}

// setCharge sets charge i: amount and vendor share in micro-units.
export function setCharge(out: usize, i: i32, amountMicro: i64, vendorMicro: i64): void {
  const c = out + 8 + <usize>i * CHARGE_SIZE;
  store<i64>(c, amountMicro);
  store<i64>(c, vendorMicro, 8);
}

// finishCharges returns kmeter_price's result for n charges at out.
export function finishCharges(out: usize, n: i32): i64 {
  return (<i64>out << 32) | <i64>(8 + <usize>n * CHARGE_SIZE);
}

// mulPrice multiplies a quantity by a per-unit price in micro-units, or
// returns ERR_OVERFLOW instead of wrapping money.
export function mulPrice(q: u64, unit: u64): i64 {
  if (unit != 0 && q > <u64>i64.MAX_VALUE / unit) return ERR_OVERFLOW;
  return <i64>(q * unit);
}

// split returns floor(amount * num / den), the ABI's vendor share rule:
// the vendor rounds down, the platform keeps the remainder.
export function split(amount: i64, num: i64, den: i64): i64 {
  return (amount / den) * num + ((amount % den) * num) / den;
}
