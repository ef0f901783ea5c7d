// The layers of src/, top to bottom: a folder may import from its own layer and the layers below it, never
// from one above. `npm run lint:layers` checks it, with no import cycles and `diagnose` kept pure.
const layers = [
  'cli', // the command line: options, help, exit codes
  'commands', // what the commands do: run scenarios, calibrate, verify (children, files)
  'report', // results, reports, fixes, the trace report
  'diagnose', // why it ended: pure functions of what was observed
  'estimate', // the memory model and its stored calibration
  'scenarios', // the scenarios `run` executes, and their catalog
  'track', // the tracker: launcher, record reader, symbols
  'probe', // the limits that bind a process
  'clip', // CLIP itself: config, checkpoints, onnxruntime and tfjs models
  'core', // units, limits, unknown values, the addon loader
];

const upward = layers.slice(1).map((layer, i) => ({
  name: `no-upward-from-${layer}`,
  comment: `src/${layer} is below ${layers.slice(0, i + 1).join(', ')}: it must not import them`,
  severity: 'error',
  from: { path: `^src/${layer}/` },
  to: { path: `^src/(${layers.slice(0, i + 1).join('|')})/` },
}));

module.exports = {
  forbidden: [
    {
      name: 'no-circular',
      comment: 'import cycles make the layers meaningless',
      severity: 'error',
      from: { path: '^src/' },
      to: { circular: true },
    },
    ...upward,
    {
      name: 'diagnose-is-pure',
      comment: 'diagnose reads only what it is given: no file, process or network access',
      severity: 'error',
      from: { path: '^src/diagnose/' },
      to: { dependencyTypes: ['core'] },
    },
    {
      name: 'diagnose-reads-track-types-only',
      comment: 'diagnose may use the tracker\'s types and its pure phase lookup, never the launcher or the record reader',
      severity: 'error',
      from: { path: '^src/diagnose/' },
      to: { path: '^src/track/(?!phases\\.ts$)', dependencyTypesNot: ['type-only'] },
    },
    {
      name: 'src-is-in-a-layer',
      comment: `every file under src/ is in one of the layers (${layers.join(', ')}), or is the package entry`,
      severity: 'error',
      from: { path: '^src/', pathNot: [`^src/(${layers.join('|')})/`, '^src/index\\.ts$'] },
      to: {},
    },
  ],
  options: {
    doNotFollow: { path: 'node_modules' },
    tsPreCompilationDeps: true,
    tsConfig: { fileName: 'tsconfig.json' },
    exclude: { path: '^(dist|build|node_modules)/' },
  },
};
