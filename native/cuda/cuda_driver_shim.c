/* The CUDA driver functions that the AOT Triton launchers and their test call, resolved from
 * libcuda.so.1 at first use (dlopen) instead of at link time: the toolkit need not ship the
 * libcuda stub, and a machine without the driver loads the library and reports "no driver"
 * (CUDA_ERROR_NO_DEVICE) instead of failing in the dynamic loader. Triton's own launcher does
 * the same. Names go through cuda.h's macros, so cuMemAlloc resolves cuMemAlloc_v2. */
#include <cuda.h>
#include <dlfcn.h>
#include <stddef.h>

static void* symbol(const char* name) {
  static void* lib = NULL;
  if (lib == NULL) lib = dlopen("libcuda.so.1", RTLD_NOW | RTLD_GLOBAL);
  return lib == NULL ? NULL : dlsym(lib, name);
}

#define NAME_(x) #x
#define NAME(x) NAME_(x)
#define SHIM(fn, params, args)                                        \
  CUresult CUDAAPI fn params {                                        \
    static CUresult(CUDAAPI * real) params = NULL;                    \
    if (real == NULL) real = (CUresult(CUDAAPI*) params)symbol(NAME(fn)); \
    return real == NULL ? CUDA_ERROR_NO_DEVICE : real args;           \
  }

SHIM(cuInit, (unsigned int flags), (flags))
SHIM(cuGetErrorString, (CUresult error, const char** str), (error, str))
SHIM(cuDeviceGetCount, (int* count), (count))
SHIM(cuDeviceGet, (CUdevice * device, int ordinal), (device, ordinal))
SHIM(cuDeviceGetAttribute, (int* pi, CUdevice_attribute attrib, CUdevice dev), (pi, attrib, dev))
SHIM(cuDevicePrimaryCtxRetain, (CUcontext * pctx, CUdevice dev), (pctx, dev))
SHIM(cuCtxSetCurrent, (CUcontext ctx), (ctx))
SHIM(cuCtxSynchronize, (void), ())
SHIM(cuMemAlloc, (CUdeviceptr * dptr, size_t bytes), (dptr, bytes))
SHIM(cuMemcpyHtoD, (CUdeviceptr dst, const void* src, size_t bytes), (dst, src, bytes))
SHIM(cuMemcpyDtoH, (void* dst, CUdeviceptr src, size_t bytes), (dst, src, bytes))
SHIM(cuModuleLoadData, (CUmodule * module, const void* image), (module, image))
SHIM(cuModuleUnload, (CUmodule hmod), (hmod))
SHIM(cuModuleGetFunction, (CUfunction * hfunc, CUmodule hmod, const char* name), (hfunc, hmod, name))
SHIM(cuFuncSetCacheConfig, (CUfunction hfunc, CUfunc_cache config), (hfunc, config))
SHIM(cuFuncSetAttribute, (CUfunction hfunc, CUfunction_attribute attrib, int value), (hfunc, attrib, value))
SHIM(cuLaunchKernel,
     (CUfunction f, unsigned int gx, unsigned int gy, unsigned int gz, unsigned int bx, unsigned int by,
      unsigned int bz, unsigned int shared, CUstream stream, void** params, void** extra),
     (f, gx, gy, gz, bx, by, bz, shared, stream, params, extra))
