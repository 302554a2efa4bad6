/** The seeded generator the tools share with the serving warm-up (see shared/core/prng.ts). */
export { mulberry32 } from '../../shared/core/prng';
