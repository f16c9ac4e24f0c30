// counter (AssemblyScript): count requests in the counter "requests_total" (Envoy:
// wasmcustom.requests_total) and return the count in "x-request-count". root_id "counter".
// The count in the header is this VM's own (the SDK's get_metric wrapper is broken).
export * from "@solo-io/proxy-runtime/proxy";
import {
  RootContext, Context, registerRootContext, FilterHeadersStatusValues, stream_context, Counter, log, LogLevelValues,
} from "@solo-io/proxy-runtime";

class CounterRoot extends RootContext {
  requests: Counter | null = null;
  seen: u32 = 0;

  onConfigure(size: u32): bool {
    super.onConfigure(size);
    this.requests = new Counter("requests_total");
    return true;
  }

  createContext(context_id: u32): Context {
    return new CountRequests(context_id, this);
  }
}

class CountRequests extends Context {
  root: CounterRoot;

  constructor(context_id: u32, root: CounterRoot) {
    super(context_id, root);
    this.root = root;
  }

  onRequestHeaders(count: u32, end_of_stream: bool): FilterHeadersStatusValues {
    (this.root.requests as Counter).increment(1);
    this.root.seen += 1;
    return FilterHeadersStatusValues.Continue;
  }

  onResponseHeaders(count: u32, end_of_stream: bool): FilterHeadersStatusValues {
    stream_context.headers.response.add("x-request-count", this.root.seen.toString());
    log(LogLevelValues.info, "counter: request " + this.root.seen.toString());
    return FilterHeadersStatusValues.Continue;
  }
}

registerRootContext((context_id: u32) => { return new CounterRoot(context_id); }, "counter");
