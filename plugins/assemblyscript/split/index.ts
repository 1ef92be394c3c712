// split: a marketplace plugin in AssemblyScript whose revenue is split
// platform:vendor 3:7. Every meter costs 13 micro-USD per unit; the
// vendor's share is floor(amount * 7 / 10) and the platform keeps the
// rest (the same rule as plugins/c/split).
import {
  recordCount, quantity, beginCharges, setCharge, finishCharges, mulPrice, split,
  ERR_MALFORMED, ERR_NOMEM,
} from "../../../sdk/assemblyscript/kmeter";

export { kmeter_abi_version, kmeter_alloc } from "../../../sdk/assemblyscript/kmeter";

const UNIT_MICRO: u64 = 13;

export function kmeter_price(batch: usize, len: u32): i64 {
  const n = recordCount(batch, len);
  if (n < 0) return ERR_MALFORMED;
  const out = beginCharges(n);
  if (out == 0) return ERR_NOMEM;
  for (let i: i32 = 0; i < n; i++) {
    const amount = mulPrice(quantity(batch, i), UNIT_MICRO);
    if (amount < 0) return amount;
    setCharge(out, i, amount, split(amount, 7, 10));
  }
  return finishCharges(out, n);
}
