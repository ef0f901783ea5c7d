// CUDA status codes by name, as cudaGetErrorName and cuGetErrorName spell them (the codes a memory
// failure can return; others are named by number). The two APIs share the out-of-memory number, 2.

export type CudaApi = 'runtime' | 'driver';

/** The status both APIs return when the device has no room: cudaErrorMemoryAllocation, CUDA_ERROR_OUT_OF_MEMORY. */
export const CUDA_OUT_OF_MEMORY = 2;

const runtimeNames: Record<number, string> = {
  0: 'cudaSuccess',
  1: 'cudaErrorInvalidValue',
  2: 'cudaErrorMemoryAllocation',
  3: 'cudaErrorInitializationError',
  4: 'cudaErrorCudartUnloading',
  35: 'cudaErrorInsufficientDriver',
  100: 'cudaErrorNoDevice',
  101: 'cudaErrorInvalidDevice',
  201: 'cudaErrorDeviceUninitialized',
  222: 'cudaErrorUnsupportedPtxVersion',
  304: 'cudaErrorOperatingSystem',
  700: 'cudaErrorIllegalAddress',
  801: 'cudaErrorNotSupported',
  999: 'cudaErrorUnknown',
};

const driverNames: Record<number, string> = {
  0: 'CUDA_SUCCESS',
  1: 'CUDA_ERROR_INVALID_VALUE',
  2: 'CUDA_ERROR_OUT_OF_MEMORY',
  3: 'CUDA_ERROR_NOT_INITIALIZED',
  4: 'CUDA_ERROR_DEINITIALIZED',
  100: 'CUDA_ERROR_NO_DEVICE',
  101: 'CUDA_ERROR_INVALID_DEVICE',
  201: 'CUDA_ERROR_INVALID_CONTEXT',
  304: 'CUDA_ERROR_OPERATING_SYSTEM',
  500: 'CUDA_ERROR_NOT_FOUND',
  700: 'CUDA_ERROR_ILLEGAL_ADDRESS',
  801: 'CUDA_ERROR_NOT_SUPPORTED',
  999: 'CUDA_ERROR_UNKNOWN',
};

/** "cudaErrorMemoryAllocation" for the runtime's 2, "CUDA_ERROR_OUT_OF_MEMORY" for the driver's. */
export function cudaErrorName(api: CudaApi, status: number): string {
  const name = (api === 'runtime' ? runtimeNames : driverNames)[status];
  return name ?? `${api === 'runtime' ? 'cudaError' : 'CUresult'} ${status}`;
}
