// callout (AssemblyScript): ask an HTTP service before letting a request through.
// root_id "callout"; configuration: the cluster to call. GET /check goes to it with the
// request's x-user; 200 → continue with "x-auth: <body>", other status → local 403, failure → 503.
export * from "@solo-io/proxy-runtime/proxy";
import {
  RootContext, Context, BaseContext, registerRootContext, FilterHeadersStatusValues, stream_context,
  send_local_response, continue_request, GrpcStatusValues, HeaderPair, Headers, log, LogLevelValues,
} from "@solo-io/proxy-runtime";
import { get_buffer_bytes, BufferTypeValues } from "@solo-io/proxy-runtime/runtime";

function pair(k: string, v: string): HeaderPair {
  return new HeaderPair(String.UTF8.encode(k), String.UTF8.encode(v));
}

function local(status: u32, body: string): void {
  send_local_response(status, "callout", String.UTF8.encode(body), [], GrpcStatusValues.InvalidCode);
}

function onAnswer(origin: Context, headers: u32, body_size: usize, trailers: u32): void {
  if (headers == 0) {
    log(LogLevelValues.warn, "callout: call failed");
    local(503, "auth unavailable\n");
    return;
  }
  if (stream_context.headers.http_callback.get(":status") != "200") {
    log(LogLevelValues.info, "callout: denied");
    local(403, "forbidden\n");
    return;
  }
  const body = String.UTF8.decode(get_buffer_bytes(BufferTypeValues.HttpCallResponseBody, 0, body_size as u32));
  stream_context.headers.request.add("x-auth", body);
  log(LogLevelValues.info, "callout: allowed");
  continue_request();
}

class CalloutRoot extends RootContext {
  createContext(context_id: u32): Context {
    return new Callout(context_id, this);
  }
}

class Callout extends Context {
  onRequestHeaders(count: u32, end_of_stream: bool): FilterHeadersStatusValues {
    const cluster = this.root_context.getConfiguration();
    const headers: Headers = [pair(":method", "GET"), pair(":path", "/check"), pair(":authority", cluster)];
    const user = stream_context.headers.request.get("x-user");
    if (user != "") headers.push(pair("x-user", user));
    this.root_context.httpCall(cluster, headers, new ArrayBuffer(0), [], 1000, this as BaseContext, onAnswer);
    log(LogLevelValues.info, "callout: waiting");
    return FilterHeadersStatusValues.StopIteration;
  }
}

registerRootContext((context_id: u32) => { return new CalloutRoot(context_id); }, "callout");
