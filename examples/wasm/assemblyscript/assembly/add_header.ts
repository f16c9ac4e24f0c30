// add_header (AssemblyScript, @solo-io/proxy-runtime 0.1.8): add the response headers given in
// the plugin configuration, one "name: value" per line. root_id "add_header".
// The SDK traps on an empty configuration (its onConfigure reads a null buffer), so give one.
export * from "@solo-io/proxy-runtime/proxy";
import {
  RootContext, Context, registerRootContext, FilterHeadersStatusValues, stream_context, log, LogLevelValues,
} from "@solo-io/proxy-runtime";

class AddHeaderRoot extends RootContext {
  names: Array<string> = [];
  values: Array<string> = [];

  onConfigure(size: u32): bool {
    super.onConfigure(size);
    const lines = this.getConfiguration().split("\n");
    for (let i = 0; i < lines.length; i++) {
      const colon = lines[i].indexOf(":");
      if (colon <= 0) continue;
      this.names.push(lines[i].substring(0, colon).trim());
      this.values.push(lines[i].substring(colon + 1).trim());
    }
    log(LogLevelValues.info, "add_header: " + this.names.length.toString() + " header(s)");
    return true;
  }

  createContext(context_id: u32): Context {
    return new AddHeader(context_id, this);
  }
}

class AddHeader extends Context {
  root: AddHeaderRoot;

  constructor(context_id: u32, root: AddHeaderRoot) {
    super(context_id, root);
    this.root = root;
  }

  onResponseHeaders(count: u32, end_of_stream: bool): FilterHeadersStatusValues {
    for (let i = 0; i < this.root.names.length; i++) {
      stream_context.headers.response.add(this.root.names[i], this.root.values[i]);
    }
    return FilterHeadersStatusValues.Continue;
  }
}

registerRootContext((context_id: u32) => { return new AddHeaderRoot(context_id); }, "add_header");
