// shared_state (AssemblyScript): count hits in shared data with compare-and-swap and return
// them in "x-hits". root_id "shared_state". Calls the raw ABI for shared data (the SDK 0.1.8
// wrappers pass wrong pointers) and frees what the host allocated.
export * from "@solo-io/proxy-runtime/proxy";
import {
  RootContext, Context, registerRootContext, FilterHeadersStatusValues, stream_context,
} from "@solo-io/proxy-runtime";
import * as imports from "@solo-io/proxy-runtime/imports";
import { free } from "@solo-io/proxy-runtime/malloc";

const CAS_MISMATCH: u32 = 8;
let lastCas: u32 = 0;

function readHits(): u32 {
  const key = String.UTF8.encode("hits");
  const out = new ArrayBuffer(12); // value ptr, value size, cas
  const base = changetype<usize>(out);
  lastCas = 0;
  if (imports.proxy_get_shared_data(changetype<usize>(key), key.byteLength, base, base + 4, base + 8) != 0) {
    return 0;
  }
  const ptr = load<u32>(base);
  const value = String.UTF8.decodeUnsafe(ptr, load<u32>(base + 4));
  lastCas = load<u32>(base + 8);
  free(ptr);
  return <u32>parseInt(value);
}

function writeHits(hits: u32, cas: u32): u32 {
  const key = String.UTF8.encode("hits");
  const value = String.UTF8.encode(hits.toString());
  return imports.proxy_set_shared_data(changetype<usize>(key), key.byteLength, changetype<usize>(value),
    value.byteLength, cas);
}

class SharedRoot extends RootContext {
  createContext(context_id: u32): Context {
    return new CountHits(context_id, this);
  }
}

class CountHits extends Context {
  onRequestHeaders(count: u32, end_of_stream: bool): FilterHeadersStatusValues {
    for (let attempt = 0; attempt < 10; attempt++) {
      const hits = readHits() + 1;
      if (writeHits(hits, lastCas) != CAS_MISMATCH) break;
    }
    return FilterHeadersStatusValues.Continue;
  }

  onResponseHeaders(count: u32, end_of_stream: bool): FilterHeadersStatusValues {
    stream_context.headers.response.add("x-hits", readHits().toString());
    return FilterHeadersStatusValues.Continue;
  }
}

registerRootContext((context_id: u32) => { return new SharedRoot(context_id); }, "shared_state");
