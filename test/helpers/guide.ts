// Example `data` of the integration guide's "Webhook Events" section, as written.

export const GUIDE_INVOICE_CREATED = {
  invoice_id: 'inv-123',
  invoice_number: '001-001-000000001',
  amount: '1500.00',
  currency: 'USD',
  customer: 'Acme Corp',
  status: 'draft',
};

export const GUIDE_PAYMENT_RECEIVED = {
  payment_id: 'pay-456',
  invoice_id: 'inv-123',
  amount: '1500.00',
  method: 'bank_transfer',
  reference: 'TR-2024-001',
  received_at: '2024-02-14T11:00:00',
};
