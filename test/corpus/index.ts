/** The whole corpus: the CNNs users bring from model zoos, then transformers, recurrent and control-flow models. */
import { CNN_CORPUS } from './cnn';
import { SEQUENCE_CORPUS } from './sequence';
import { CorpusEntry, Feeds } from './types';

export const CORPUS: CorpusEntry[] = [...CNN_CORPUS, ...SEQUENCE_CORPUS];
export { CorpusEntry, Feeds };
