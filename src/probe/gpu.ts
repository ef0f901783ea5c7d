// GPU memory: NVML and the CUDA driver, loaded by dlopen in the addon. The library paths can be
// overridden (a driver outside the loader's path, or the test stub) with environment variables.
import { GpuReport, probeAddon } from './native';
import { ENV_PREFIX, envValue } from '../core/env';

export const NVML_LIBRARY_VARIABLE = `${ENV_PREFIX}NVML_LIBRARY`;
export const CUDA_LIBRARY_VARIABLE = `${ENV_PREFIX}CUDA_LIBRARY`;
export const DEFAULT_NVML_LIBRARY = 'libnvidia-ml.so.1';
export const DEFAULT_CUDA_LIBRARY = 'libcuda.so.1';

/** Never throws: a missing library or driver comes back as `unavailable: <why>`. */
export function probeGpu(env: NodeJS.ProcessEnv = process.env): GpuReport {
  const nvmlLibrary = envValue('NVML_LIBRARY', env) || DEFAULT_NVML_LIBRARY;
  const cudaLibrary = envValue('CUDA_LIBRARY', env) || DEFAULT_CUDA_LIBRARY;
  return probeAddon().probeGpu(nvmlLibrary, cudaLibrary);
}
