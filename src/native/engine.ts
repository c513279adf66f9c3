// Picks the implementation of the byte-level layer once per process: the C++ addon, or its TypeScript
// twin (byte-identical output, slower) when the addon cannot load or PAGEWIRE_NO_NATIVE=1 asks for it.
import { loadAddon, type NativeBinding } from './binding.js';
import { twin } from './twin/index.js';
import { NativeUnavailableError } from '../errors.js';

let chosen: NativeBinding | undefined;

export function binding(): NativeBinding {
  chosen ??= choose();
  return chosen;
}

function choose(): NativeBinding {
  if (process.env.PAGEWIRE_NO_NATIVE === '1') return twin;
  try {
    return loadAddon();
  } catch (error) {
    if (!(error instanceof NativeUnavailableError)) throw error;
    process.emitWarning(`${error.message}; using the TypeScript twin instead (slower)`, { code: 'PAGEWIRE_NO_ADDON' });
    return twin;
  }
}

/** Which implementation this process uses: 'addon' (C++) or 'twin' (TypeScript). */
export function codecKind(): 'addon' | 'twin' {
  return binding().kind;
}
