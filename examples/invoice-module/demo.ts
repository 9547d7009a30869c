// Creates one invoice on a Hookline database, as the ERP would:
//   DATABASE_URL=postgres://... TENANT_ID=<tenant id> npx tsx examples/invoice-module/demo.ts
// Prints the invoice as JSON. Run a Hookline process on the same database to send its webhook.
// In an app: import { runMigrations } from 'hookline';
import { runMigrations } from '../../src/index.js';
import { createAppDataSource } from './data-source.js';
import { InvoiceService } from './invoice-service.js';

async function main() {
  const url = process.env.DATABASE_URL;
  const tenantId = process.env.TENANT_ID;
  if (!url || !tenantId) throw new Error('set DATABASE_URL and TENANT_ID');
  const dataSource = await createAppDataSource(url).initialize();
  try {
    await runMigrations(dataSource); // Hookline's and the app's, under Hookline's advisory lock
    const invoice = await new InvoiceService(dataSource).createInvoice(
      {
        number: process.env.INVOICE_NUMBER ?? '001-001-000000001',
        total: '1500.00',
        currency: 'USD',
        customer_name: 'Acme Corp',
      },
      tenantId,
    );
    console.log(JSON.stringify(invoice));
  } finally {
    await dataSource.destroy();
  }
}

main().catch((error) => {
  // A refusal (the database's: a number used already, a TENANT_ID that is no id; or Hookline's)
  // is said in a line; anything else with its stack.
  const { code, message, detail } = (error ?? {}) as { code?: string; message?: string; detail?: string };
  console.error(code ? `demo: ${message}${detail ? ` (${detail})` : ''} [${code}]` : error);
  process.exitCode = 1;
});
