// action-kinds (rule ABI v2), in AssemblyScript: a conformance rule that reads each
// reply type and returns every kind of action; the same behaviour as
// rules-wasm/action-kinds (see its lib.rs for the definition).

import {
  Actions, Bytes, Event, ReadCode, ValueType, get, manifest, read, runV2, topicLastLevel,
} from "../../guest-sdk/assemblyscript/wasmrule";
export { wasmrule_abi_version_2, wasmrule_alloc } from "../../guest-sdk/assemblyscript/wasmrule";

function join(parts: StaticArray<Bytes>): Bytes {
  let n: u32 = 0;
  for (let i = 0; i < parts.length; i++) n += parts[i].len;
  const buf = heap.alloc(n);
  let at = buf;
  for (let i = 0; i < parts.length; i++) {
    memory.copy(at, parts[i].ptr, parts[i].len);
    at += parts[i].len;
  }
  return new Bytes(buf, n);
}

function actionKinds(event: Event, out: Actions): void {
  const x = topicLastLevel(event.topic());
  const cfg = read([Bytes.of("HGETALL"), join([Bytes.of("cfg:"), x])]);
  const len = read([Bytes.of("LLEN"), join([Bytes.of("q:"), x])]);
  const missing = get(join([Bytes.of("missing:"), x]));
  if (cfg.code != ReadCode.Ok || len.code != ReadCode.Ok || missing.code != ReadCode.Ok) {
    out.error("a read failed");
    return;
  }
  if (cfg.value.type != ValueType.Array || len.value.type != ValueType.Int) {
    out.error("unexpected reply types");
    return;
  }
  const items = cfg.value.items;
  out.command("HSET").argBytes(join([Bytes.of("seen:"), x]))
    .arg("fields").arg((items.length / 2).toString())
    .arg("len").arg(len.value.int.toString());
  out.command("INCR").argBytes(join([Bytes.of(missing.value.isNil() ? "nil:" : "notnil:"), x]));
  for (let i = 0; i + 1 < items.length; i += 2) {
    const field = items[i];
    const value = items[i + 1];
    if (field.type != ValueType.Bulk || value.type != ValueType.Bulk) {
      out.error("a field or value is not a string");
      return;
    }
    out.publish(join([Bytes.of("out/"), x, Bytes.of("/"), field.bulk]), value.bulk, 0, false)
      .property(Bytes.of("n"), Bytes.of((i / 2).toString()));
  }
  const client = join([Bytes.of("c-"), x]);
  out.subscribe(client, join([Bytes.of("in/"), x, Bytes.of("/#")]), 1);
  out.unsubscribe(client, join([Bytes.of("old/"), x, Bytes.of("/#")]));
  out.deliver(client, join([Bytes.of("in/"), x, Bytes.of("/hello")]), Bytes.of("hi"), 1, true);
}

export function wasmrule_manifest(): u64 {
  return manifest("action-kinds", "0.1.0", ["kinds/+"]);
}

export function wasmrule_on_event(ptr: usize, len: u32): u64 {
  return runV2(ptr, len, actionKinds);
}
