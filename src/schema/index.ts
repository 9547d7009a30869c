import { builder } from './builder.js';
import './tenant.js';

export const schema = builder.toSchema({ sortSchema: false });
export { builder };
