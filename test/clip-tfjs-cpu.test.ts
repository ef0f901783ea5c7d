// The tfjs CLIP model on tfjs's pure-JavaScript cpu backend against the PyTorch reference.
import test from 'ava';
import { referenceTests } from './helpers/clip-tfjs-reference';

referenceTests(test, 'cpu');
