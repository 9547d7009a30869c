import { Tenants1764300000001 } from './0001-tenants.js';
import { CatalogAndSubscriptions1764300000002 } from './0002-catalog-subscriptions.js';
import { EventsAndDeliveries1764300000003 } from './0003-events-deliveries.js';
import { LiveUpdates1764300000004 } from './0004-live-updates.js';
import { DueNotifyPending1764300000005 } from './0005-due-notify-pending.js';
import { LockedOnlySending1764300000006 } from './0006-locked-only-sending.js';
import { LiveListeners1764300000007 } from './0007-live-listeners.js';
import { SubscriptionTombstones1764300000008 } from './0008-subscription-tombstones.js';
import { DueByTenant1764300000009 } from './0009-due-by-tenant.js';
import { Workers1764300000010 } from './0010-workers.js';
import { FailedDeliveries1764300000011 } from './0011-failed-deliveries.js';
import { BuiltInIds1764300000012 } from './0012-builtin-ids.js';
import { LiveAnyIsolation1764300000013 } from './0013-live-any-isolation.js';
import { EarlierSecrets1764300000014 } from './0014-earlier-secrets.js';
import { LiveLongErrors1764300000015 } from './0015-live-long-errors.js';
import { LiveErrorsAsWritten1764300000016 } from './0016-live-errors-as-written.js';
import { TestDeliveries1764300000017 } from './0017-test-deliveries.js';
import { ClaimedTestDeliveries1764300000018 } from './0018-claimed-test-deliveries.js';
import { ApiKeysGone1764300000019 } from './0019-api-keys-gone.js';
import { ApiKeysTruncated1764300000020 } from './0020-api-keys-truncated.js';
import { EventTypeVersions1764300000021 } from './0021-event-type-versions.js';
import { waitingBriefly } from './sql.js';

/** Every migration, in the order it runs (each waiting briefly for locks under runMigrations: see sql.ts). New ones go at the end. */
export const migrations = [
  Tenants1764300000001,
  CatalogAndSubscriptions1764300000002,
  EventsAndDeliveries1764300000003,
  LiveUpdates1764300000004,
  DueNotifyPending1764300000005,
  LockedOnlySending1764300000006,
  LiveListeners1764300000007,
  SubscriptionTombstones1764300000008,
  DueByTenant1764300000009,
  Workers1764300000010,
  FailedDeliveries1764300000011,
  BuiltInIds1764300000012,
  LiveAnyIsolation1764300000013,
  EarlierSecrets1764300000014,
  LiveLongErrors1764300000015,
  LiveErrorsAsWritten1764300000016,
  TestDeliveries1764300000017,
  ClaimedTestDeliveries1764300000018,
  ApiKeysGone1764300000019,
  ApiKeysTruncated1764300000020,
  EventTypeVersions1764300000021,
].map(waitingBriefly);
