// deny (AssemblyScript): refuse requests carrying the configured header with a local 403.
// root_id "deny"; configuration: the header name (required: the SDK traps on an empty one).
// A header with an empty value counts as absent (the SDK's get() returns "" for both).
export * from "@solo-io/proxy-runtime/proxy";
import {
  RootContext, Context, registerRootContext, FilterHeadersStatusValues, stream_context, send_local_response,
  GrpcStatusValues, HeaderPair, log, LogLevelValues,
} from "@solo-io/proxy-runtime";

class DenyRoot extends RootContext {
  createContext(context_id: u32): Context {
    return new Deny(context_id, this);
  }
}

class Deny extends Context {
  onRequestHeaders(count: u32, end_of_stream: bool): FilterHeadersStatusValues {
    const name = this.root_context.getConfiguration();
    if (stream_context.headers.request.get(name) == "") {
      return FilterHeadersStatusValues.Continue;
    }
    log(LogLevelValues.warn, "deny: " + stream_context.headers.request.get(":path"));
    const headers: HeaderPair[] = [new HeaderPair(String.UTF8.encode("x-denied-by"), String.UTF8.encode("wasm"))];
    send_local_response(403, "denied by header", String.UTF8.encode("denied by wasm\n"), headers,
      GrpcStatusValues.InvalidCode);
    return FilterHeadersStatusValues.StopIteration;
  }
}

registerRootContext((context_id: u32) => { return new DenyRoot(context_id); }, "deny");
