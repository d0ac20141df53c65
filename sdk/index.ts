/** quantbook's public surface. */
export { QuantbookError, ErrorCode } from './errors';
export { DataType, TensorArray, typeName, toFloat32 } from './onnx/dtype';
export { Graph, ValueType, Dim, NodeSpec, SubgraphRef, attributeValue, constantNodeValue } from './onnx/graph';
export { Model, loadModel } from './onnx/model';
export { LoadOptions, SaveOptions, SaveResult, ExternalDataOptions } from './onnx/model-io';
export { TensorData, makeTensor, readTensor, readTensorAsFloat32 } from './onnx/tensor';
export * as proto from './onnx/proto';
export { Runner, RunnerOptions, RunResult, Feeds, ortTensor } from './runtime/runner';
export { bundledModelPath, BundledFile } from './models';
export { BACKENDS, BackendName, BackendInfo, initBackend, backendInfo, describeBackend } from './kernels/backend';
export { Reductions, chooseReductions, reductionChoice, useReductions, loopReductions, tfjsReductions } from './kernels/reductions';
export { Histogram } from './kernels/histogram';
export { roundHalfEven, quantizeLinear, dequantizeLinear, fakeQuantize } from './kernels/quant';
export * from './observers';
export { StatRow, statsTable, rowsFromTable, writeStats, readStats } from './stats/calibration-stats';
export { calibrate, CalibrateOptions, CalibrationResult, CalibrationTarget, CalibrationProgress, CalibrationTiming, defaultTargets } from './calibration/calibrator';
export { batchesFrom, readNpy, CalibrationSource } from './calibration/data';
