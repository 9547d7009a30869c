import { builder } from './builder.js';
import './tenant.js';
import './catalog.js';
import './subscriptions.js';
import './deliveries.js';
import './live.js';

export const schema = builder.toSchema({ sortSchema: false });
export { builder };
