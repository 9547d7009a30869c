export { WebhookSignature, type RawBody, type SecretOrKey } from './webhook-signature.js';
export {
  buildSignedHeaders,
  decodeSecrets,
  signStandardWebhook,
  StandardWebhookVerifier,
  WebhookVerificationError,
  type BuildSignedHeadersInput,
  type HeadersInput,
  type SecretsOrKeys,
  type SignedHeaders,
  type SignStandardWebhookInput,
  type StandardWebhookVerifierOptions,
  type WebhookVerificationReason,
} from './standard-webhooks.js';
