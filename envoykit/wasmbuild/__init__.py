"""Build Proxy-Wasm filters from source: the example filters of ``examples/wasm`` and their toolchains.

``build.build_example(name)`` → the ``.wasm`` path (C through ``zig cc`` or clang, AssemblyScript through
npm, WAT through wasmtime), cached by source hash; ``envoykit wasm build`` on the command line;
the ``wasm_example`` pytest fixture in :mod:`envoykit.wasmbuild.pytest_plugin`. A build tool, not part
of the host: :mod:`envoykit.wasmhost` runs any ``.wasm`` and imports nothing of this.
"""
