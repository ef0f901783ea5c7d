// Library entry point: every capability's public types and functions.
export { loadAddon, packageRoot } from './native';
