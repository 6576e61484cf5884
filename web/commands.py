"""`flask seed`: demo customers and orders for a fresh development database."""

from __future__ import annotations

from decimal import Decimal

import click
from flask import Flask, current_app
from flask.cli import with_appcontext
from sqlalchemy import select

from models import customers, placing
from models.actors import Actor
from models.customers import Customer
from models.db import db

DEMO_CUSTOMERS = (
    ("DEMO-AMINA", "Amina Otieno", "0722000111", "amina@example.com"),
    ("DEMO-BARAKA", "Baraka Mwangi", "0733000222", "baraka@example.com"),
    ("DEMO-CHEPKOECH", "Chepkoech Rono", "0711000333", None),
)
DEMO_ORDERS = (
    ("Maize flour 2kg", 3, "185.00"),
    ("Cooking oil 1L", 2, "320.50"),
    ("Sugar 1kg", 1, "210.00"),
)


@click.command("seed")
@with_appcontext
def seed() -> None:
    """Load demo customers and orders (skips customers that already exist)."""
    settings = current_app.config["SETTINGS"]
    if settings.is_production:
        raise click.UsageError("seed loads demo data with made-up phone numbers: development only")
    seeder = Actor(subject="seed", is_admin=True)
    created = 0
    for code, name, phone, email in DEMO_CUSTOMERS:
        if db.session.scalars(select(Customer).where(Customer.code == code)).first():
            continue
        customer = customers.create_customer(
            db.session,
            actor=seeder,
            name=name,
            phone=phone,
            email=email,
            code=code,
            region=settings.default_region,
        )
        for item, quantity, price in DEMO_ORDERS:
            placing.create_order(
                db.session,
                actor=seeder,
                customer_id=str(customer.id),
                item=item,
                quantity=quantity,
                unit_price=Decimal(price),
                default_currency=settings.default_currency,
                company=settings.company_name,
            )
        created += 1
    db.session.commit()
    click.echo(f"seeded {created} customers with {created * len(DEMO_ORDERS)} orders")


def init_app(app: Flask) -> None:
    app.cli.add_command(seed)
