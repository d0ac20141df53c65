/**
 * Root hook (loaded by .mocharc): every quantized model the suite serializes or saves, through
 * any SDK path, is audited for saturated int32 biases and weight scales below the floor
 * (sdk/quantize/audit.ts). The suite fails at the end, naming the tests and nodes, if one was.
 */
import { strict as assert } from 'assert';
import { Model } from '../sdk/onnx/model';
import { AuditFinding, auditQuantizedModel } from '../sdk/quantize/audit';

const findings: Array<{ test: string; finding: AuditFinding }> = [];
let audited = 0;
let currentTest = '(outside a test)';

/** Models built to be broken (tests of the audit itself) opt out with this marker. */
export const UNAUDITED = new WeakSet<object>();

function audit(model: Model): void {
  if (UNAUDITED.has(model.proto)) return;
  // a fresh wrapper: the audit must not build (and leave stale) the caller's graph index
  const found = auditQuantizedModel(new Model(model.proto));
  if (model.proto.graph?.node?.some((n) => n.op_type === 'DequantizeLinear')) audited++;
  for (const f of found) findings.push({ test: currentTest, finding: f });
}

const { toBytes, save } = Model.prototype;
Model.prototype.toBytes = function (this: Model) {
  audit(this);
  return toBytes.call(this);
};
Model.prototype.save = function (this: Model, ...args: Parameters<Model['save']>) {
  audit(this);
  return save.apply(this, args);
};

export const mochaHooks = {
  beforeEach(this: Mocha.Context) {
    currentTest = this.currentTest?.fullTitle() ?? currentTest;
  },
  afterAll() {
    console.log(`  quantized-model audit: ${audited} QDQ models serialized, ${findings.length} findings`);
    const lines = findings.slice(0, 20).map(({ test, finding: f }) => `${test}: ${f.kind} at ${f.node} (${f.tensor}: ${f.count}, worst ${f.worst})`);
    assert.equal(findings.length, 0, `quantized models with unsound integer constants:\n${lines.join('\n')}`);
  },
};
