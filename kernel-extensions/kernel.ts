/**
 * Where display output goes. Inside a tslab kernel: Jupyter display messages (rich HTML,
 * plots, displays that update in place). Anywhere else (node, mocha, the CLI): plain text on
 * the terminal, so the same notebook code also runs as a script.
 *
 * The kernel is found through the tslab module the kernel process has already loaded (in
 * require.cache), not through `require('tslab')`: a user's quantbook and the kernel's tslab can
 * live in different node_modules, and only the kernel's copy is connected to Jupyter.
 */

interface TslabDisplay { raw(contentType: string, b: string): void }
interface TslabModule { display: TslabDisplay; newDisplay(): TslabDisplay }

function loadedTslab(): TslabModule | undefined {
  for (const file of Object.keys(require.cache)) {
    if (!/[\\/]tslab[\\/]dist[\\/]jupyter\.js$/.test(file)) continue;
    // tslab sets lastWriteDisplayData once the kernel runs a cell; before that, display throws
    if (!(require.cache[file]?.exports as { lastWriteDisplayData?: unknown } | undefined)?.lastWriteDisplayData) continue;
    return require(file.replace(/jupyter\.js$/, 'public.js')) as TslabModule; // same module instance as the kernel's
  }
  return undefined;
}

/** True when this code runs inside a tslab Jupyter kernel that can show rich output. */
export function inKernel(): boolean {
  return loadedTslab() !== undefined;
}

/** A display area: shows HTML in a notebook (replacing its previous content), text elsewhere. */
export interface Output {
  show(html: string, text: string): void;
}

/** Shows once, in a new output area. */
export const output: Output = {
  show(html, text) {
    const tslab = loadedTslab();
    if (tslab) tslab.display.raw('text/html', html);
    else console.log(text);
  },
};

/** An output area that later calls overwrite (Jupyter update_display_data): live progress. */
export function updatingOutput(): Output {
  const display = loadedTslab()?.newDisplay();
  return {
    show(html, text) {
      if (display) display.raw('text/html', html);
      else console.log(text);
    },
  };
}
