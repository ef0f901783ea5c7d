// Checks JSON output against the versioned schemas in schema/: one validator per schema, compiled once.
import Ajv, { type ValidateFunction } from 'ajv';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { repoRoot } from './paths';

const validators = new Map<string, ValidateFunction>();

/** Where `value` breaks schema/NAME.schema.json ('' when it follows it). */
export function schemaErrors(name: string, value: unknown): string {
  let validate = validators.get(name);
  if (!validate) {
    const schema = JSON.parse(fs.readFileSync(path.join(repoRoot, 'schema', `${name}.schema.json`), 'utf8'));
    validate = new Ajv({ allErrors: true }).compile(schema);
    validators.set(name, validate);
  }
  return validate(value) ? '' : new Ajv().errorsText(validate.errors);
}
