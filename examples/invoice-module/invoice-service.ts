// The guide's "Ejemplo 1" InvoiceService (and "Método 2"), in TypeScript with
// TypeORM: the invoice row and its invoice.created webhook are written in one
// transaction, so both commit or neither does. Hookline's dispatcher (any
// Hookline process on the same database) sends the delivery after the commit.
import type { DataSource, EntityManager } from 'typeorm';
// In an app: import { WebhookService } from 'hookline';
import { WebhookService } from '../../src/index.js';
import { Invoice } from './invoice.js';

export interface CreateInvoiceData {
  number: string;
  /** A decimal string, e.g. "1500.00". */
  total: string;
  currency: string;
  customer_name: string;
  status?: string;
}

export class InvoiceService {
  private readonly webhooks: WebhookService;

  constructor(
    private readonly dataSource: DataSource,
    webhooks?: WebhookService,
  ) {
    this.webhooks = webhooks ?? new WebhookService(dataSource);
  }

  /**
   * Creates the invoice and triggers invoice.created, in one transaction of
   * its own; with `manager` (inside a caller's transaction), in that one.
   */
  createInvoice(data: CreateInvoiceData, tenantId: string, manager?: EntityManager): Promise<Invoice> {
    if (manager) return this.create(manager, data, tenantId);
    return this.dataSource.transaction((tx) => this.create(tx, data, tenantId));
  }

  private async create(manager: EntityManager, data: CreateInvoiceData, tenantId: string): Promise<Invoice> {
    const invoice = await manager.save(
      manager.create(Invoice, {
        tenantId,
        number: data.number,
        total: data.total,
        currency: data.currency,
        customerName: data.customer_name,
        status: data.status ?? 'draft',
      }),
    ); // the INSERT has run: the id is known, nothing is committed yet

    // Joins the transaction: validated against the event's schema, and rolled
    // back with the invoice if anything after this point fails.
    await this.webhooks.triggerEvent(
      {
        tenantId,
        event: 'invoice.created',
        resourceType: 'invoice',
        resourceId: invoice.id,
        data: {
          invoice_id: invoice.id,
          invoice_number: invoice.number,
          amount: String(invoice.total),
          currency: invoice.currency,
          customer: invoice.customerName,
          status: invoice.status,
        },
      },
      manager,
    );
    return invoice;
  }
}
