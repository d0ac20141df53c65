import * as assert from 'assert';
import * as fs from 'fs';
import * as path from 'path';
import { loadSafetensors, readSafetensors, writeSafetensors, writeSafetensorsSet, StoredTensor } from '../../sdk/export/safetensors';
import { QuantbookError } from '../../sdk/errors';
import { randomFloats, requireChecker, runPython, tempDir } from '../helpers';

/** An independent reader: struct + json + numpy, following the published format. */
const PY_READER = `
import json, struct, sys, hashlib, numpy as np
DT = {'F64':'<f8','F32':'<f4','F16':'<f2','BF16':'<u2','I64':'<i8','I32':'<i4','I16':'<i2','I8':'i1','U64':'<u8','U32':'<u4','U16':'<u2','U8':'u1','BOOL':'u1','F8_E4M3':'u1','F8_E5M2':'u1'}
out = {}
for f in sys.argv[1:]:
    raw = open(f, 'rb').read()
    (n,) = struct.unpack('<Q', raw[:8])
    assert n % 8 == 0, 'header not padded to 8'
    header = json.loads(raw[8:8 + n])
    meta = header.pop('__metadata__', None)
    data = raw[8 + n:]
    for name, e in header.items():
        b, end = e['data_offsets']
        a = np.frombuffer(data[b:end], dtype=DT[e['dtype']]).reshape(e['shape'])
        out[name] = {'dtype': e['dtype'], 'shape': list(a.shape), 'sha': hashlib.sha256(a.tobytes()).hexdigest(), 'sum': float(a.astype(np.float64).sum()), 'meta': meta}
print(json.dumps(out))
`;

export function pythonRead(files: string[]): Record<string, { dtype: string; shape: number[]; sha: string; sum: number; meta: Record<string, string> | null }> {
  return JSON.parse(runPython(PY_READER, files));
}

function sha(t: StoredTensor): string {
  return require('crypto').createHash('sha256').update(Buffer.from(t.data.buffer, t.data.byteOffset, t.data.byteLength)).digest('hex');
}

function sample(): Map<string, StoredTensor> {
  return new Map<string, StoredTensor>([
    ['conv.weight', { dtype: 'I8', shape: [4, 3, 3, 3], data: Int8Array.from({ length: 108 }, (_, i) => (i * 37) % 256 - 128) }],
    ['conv.deq_scale', { dtype: 'I64', shape: [4], data: BigInt64Array.of(1n, 2n ** 40n, -3n, 1065353216n) }],
    ['conv.quant_bias', { dtype: 'I32', shape: [4], data: Int32Array.of(-2147483648, 0, 7, 2147483647) }],
    ['fc.weight', { dtype: 'F32', shape: [5, 7], data: randomFloats(35, 11) }],
    ['half', { dtype: 'F16', shape: [3], data: Uint16Array.of(0x3c00, 0xc000, 0x7bff) }],
    ['f64', { dtype: 'F64', shape: [2], data: Float64Array.of(Math.PI, -1e300) }],
    ['u8', { dtype: 'U8', shape: [1], data: Uint8Array.of(255) }],
    ['scalar', { dtype: 'F32', shape: [], data: Float32Array.of(0.5) }],
    ['empty', { dtype: 'F32', shape: [0, 3], data: new Float32Array(0) }],
  ]);
}

describe('safetensors', () => {
  it('round-trips every dtype bit-exactly, read back by quantbook and by an independent Python reader', function () {
    requireChecker(this); // Debian python3 with numpy
    const dir = tempDir();
    const file = path.join(dir, 'a.safetensors');
    const tensors = sample();
    writeSafetensors(file, tensors, { producer: 'quantbook' });
    const back = readSafetensors(file);
    assert.deepEqual(back.metadata, { producer: 'quantbook' });
    assert.deepEqual([...back.tensors.keys()], [...tensors.keys()]);
    for (const [name, t] of tensors) {
      const b = back.tensors.get(name)!;
      assert.equal(b.dtype, t.dtype);
      assert.deepEqual(b.shape, t.shape);
      assert.equal(sha(b), sha(t), name);
      assert.equal(b.data.constructor, t.data.constructor, name);
    }
    const py = pythonRead([file]);
    assert.deepEqual(Object.keys(py).sort(), [...tensors.keys()].sort());
    for (const [name, t] of tensors) {
      assert.equal(py[name].sha, sha(t), name);
      assert.deepEqual(py[name].shape, t.shape, name);
      assert.deepEqual(py[name].meta, { producer: 'quantbook' });
    }
    assert.equal(py['u8'].sum, 255);
    assert.equal(py['conv.quant_bias'].sum, -2147483648 + 7 + 2147483647);
  });

  it('shards by part size with a Hugging Face style index, and reads the set back whole', function () {
    requireChecker(this);
    const dir = tempDir();
    const tensors = new Map<string, StoredTensor>(Array.from({ length: 10 }, (_, i) => [`layer${i}.weight`, { dtype: 'F32', shape: [100], data: randomFloats(100, i) }] as [string, StoredTensor]));
    const set = writeSafetensorsSet(dir, 'w.safetensors', tensors, { partBytes: 1000 }); // 400 B each → 3 per shard
    assert.deepEqual(set.files.map((f) => path.basename(f)), ['w-00001-of-00004.safetensors', 'w-00002-of-00004.safetensors', 'w-00003-of-00004.safetensors', 'w-00004-of-00004.safetensors']);
    const index = JSON.parse(fs.readFileSync(set.index!, 'utf8'));
    assert.equal(index.metadata.total_size, 4000);
    assert.equal(index.weight_map['layer9.weight'], 'w-00004-of-00004.safetensors');
    const back = loadSafetensors(set.index!);
    assert.equal(back.tensors.size, 10);
    for (const [name, t] of tensors) assert.equal(sha(back.tensors.get(name)!), sha(t));
    const py = pythonRead(set.files);
    for (const [name, t] of tensors) assert.equal(py[name].sha, sha(t));
    // fits in one part: one file, no index
    const one = writeSafetensorsSet(dir, 'one.safetensors', tensors, { partBytes: 1e9 });
    assert.equal(one.files.length, 1);
    assert.equal(one.index, undefined);
  });

  it('rejects bad tensors and corrupt files with the reason', () => {
    const dir = tempDir();
    assert.throws(() => writeSafetensors(path.join(dir, 'x.safetensors'), [['a', { dtype: 'F32', shape: [3], data: new Float32Array(2) }]]), /"a": 8 bytes of data for shape \[3\] of F32 \(needs 12\)/);
    assert.throws(() => writeSafetensors(path.join(dir, 'x.safetensors'), [['a', { dtype: 'Q8' as never, shape: [1], data: new Int8Array(1) }]]), /dtype Q8 is not one of F64, F32/);
    assert.ok(!fs.existsSync(path.join(dir, 'x.safetensors')));
    const good = path.join(dir, 'g.safetensors');
    writeSafetensors(good, sample());
    const bytes = fs.readFileSync(good);
    fs.writeFileSync(path.join(dir, 'trunc.safetensors'), bytes.subarray(0, bytes.length - 1));
    assert.throws(() => readSafetensors(path.join(dir, 'trunc.safetensors')), (e: QuantbookError) => e.code === 'INVALID_ARGUMENT' && /not a valid safetensors file/.test(e.message));
    fs.writeFileSync(path.join(dir, 'extra.safetensors'), Buffer.concat([bytes, Buffer.alloc(4)]));
    assert.throws(() => readSafetensors(path.join(dir, 'extra.safetensors')), /4 bytes after the last tensor/);
    assert.throws(() => readSafetensors(path.join(dir, 'missing.safetensors')), (e: QuantbookError) => e.code === 'FILE_NOT_FOUND');
  });
});
