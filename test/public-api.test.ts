// Everything the public signatures name must be importable from 'pagewire': the package's exports map
// allows the root entry only, so a type left out there cannot be named by an embedder at all.
import { describe, expect, it } from 'vitest';
import ts from 'typescript';
import { join } from 'node:path';
import { ROOT } from './helpers.js';

/**
 * The declarations of pagewire's own files that the exported API names (in members, parameters,
 * results, heritage clauses and type arguments; private members name nothing) but that are not among
 * the exports of dist/src/index.d.ts, as "file: name".
 */
function unexportedPublicTypes(): string[] {
  const entry = join(ROOT, 'dist', 'src', 'index.d.ts');
  const program = ts.createProgram([entry], { module: ts.ModuleKind.NodeNext, moduleResolution: ts.ModuleResolutionKind.NodeNext, noEmit: true });
  const checker = program.getTypeChecker();
  const own = (declaration: ts.Declaration) => declaration.getSourceFile().fileName.startsWith(join(ROOT, 'dist', 'src'));
  const resolve = (symbol: ts.Symbol) => (symbol.flags & ts.SymbolFlags.Alias ? checker.getAliasedSymbol(symbol) : symbol);
  const exported = new Set(checker.getExportsOfModule(checker.getSymbolAtLocation(program.getSourceFile(entry)!)!).map(resolve));
  const missing = new Set<string>();
  const visited = new Set<ts.Symbol>();

  const visitSymbol = (symbol: ts.Symbol) => {
    if (visited.has(symbol)) return;
    visited.add(symbol);
    for (const declaration of symbol.declarations ?? []) {
      if (!own(declaration)) continue;
      if (!exported.has(symbol)) missing.add(`${declaration.getSourceFile().fileName.slice(ROOT.length)}: ${symbol.name}`);
      visitNode(declaration);
    }
  };
  const visitNode = (node: ts.Node): void => {
    const modifiers = ts.canHaveModifiers(node) ? ts.getModifiers(node) : undefined;
    if (modifiers?.some((m) => m.kind === ts.SyntaxKind.PrivateKeyword)) return;
    let name: ts.Node | undefined;
    if (ts.isTypeReferenceNode(node)) name = node.typeName;
    else if (ts.isExpressionWithTypeArguments(node)) name = node.expression;
    else if (ts.isTypeQueryNode(node)) name = node.exprName;
    else if (ts.isImportTypeNode(node)) name = node.qualifier ?? undefined;
    const symbol = name && checker.getSymbolAtLocation(name);
    if (symbol) visitSymbol(resolve(symbol));
    ts.forEachChild(node, visitNode);
  };
  for (const symbol of exported) visitSymbol(symbol);
  return [...missing].sort();
}

describe('the public API', () => {
  it('exports every type its exported declarations name', () => {
    expect(unexportedPublicTypes()).toEqual([]);
  });
});
