#!/usr/bin/env bash
# Assemble a CUDA 13.0 toolkit from PyPI wheels so that candle's `cuda` feature COMPILES on a machine without a GPU
# or an apt CUDA toolkit (measured here: clean debug build of candle-core + candle-nn with `cuda` in about 6 minutes).
# The CUDA 12.x wheels cannot do this: none of them ships an `nvcc` binary. CUDA 13.0 matches the GPU machines'
# driver (580) and nvcc 13.0.
#
# usage: source <(scripts/cuda-toolkit.sh DIR)       # prints the exports to use
#   then: cargo build --features cuda
#   run without a GPU:  LD_LIBRARY_PATH=$CUDA_HOME/lib64:$CUDA_HOME/lib64/stubs target/debug/…   (the driver calls fail cleanly)
#   run on a GPU:       never put lib64/stubs on the path (it would hide the real driver)
set -euo pipefail
R="${1:?usage: cuda-toolkit-from-pypi.sh DIR}"; mkdir -p "$R"; R="$(cd "$R" && pwd)"
T="$R/cuda"
if [ ! -x "$T/bin/nvcc" ]; then
  python3 -m venv "$R/venv" >&2
  "$R/venv/bin/pip" install -q "cuda-toolkit[nvcc,crt,nvvm,cudart,cublas,curand,nvrtc,cccl]==13.0.2" >&2
  CU=$("$R/venv/bin/python" -c 'import os,nvidia;print(os.path.join(nvidia.__path__[0],"cu13"))')
  mkdir -p "$T/lib64/stubs"
  ln -sfn "$CU/bin" "$T/bin"; ln -sfn "$CU/include" "$T/include"; ln -sfn "$CU/nvvm" "$T/nvvm"
  for f in "$CU"/lib/*.so.* "$CU"/lib/*.a; do ln -sf "$f" "$T/lib64/"; done
  (cd "$T/lib64" && for f in *.so.*; do ln -sf "$f" "${f%%.so.*}.so"; done)   # -lcudart etc. need unversioned names
  # No wheel ships libcuda (it comes with the driver). candle links -lcuda at build time, so build a stub that
  # returns CUDA_ERROR_STUB_LIBRARY (34) for every driver entry point declared in cuda.h.
  gcc -E -P -I"$CU/include" "$CU/include/cuda.h" | grep -oE '\bcu[A-Z][A-Za-z0-9_]*[[:space:]]*\(' | tr -d ' (' \
    | sort -u | sed 's/.*/int &(void){return 34;}/' > "$T/lib64/stubs/stub.c"
  gcc -shared -fPIC -Wl,-soname,libcuda.so.1 -o "$T/lib64/stubs/libcuda.so" "$T/lib64/stubs/stub.c"
  ln -sf libcuda.so "$T/lib64/stubs/libcuda.so.1"
fi
cat <<OUT
export CUDA_HOME=$T CUDA_PATH=$T CUDA_ROOT=$T PATH=$T/bin:\$PATH CUDA_COMPUTE_CAP=\${CUDA_COMPUTE_CAP:-90}
export LIBRARY_PATH=$T/lib64:$T/lib64/stubs\${LIBRARY_PATH:+:\$LIBRARY_PATH}
OUT
