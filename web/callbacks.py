"""Delivery reports from Africa's Talking."""

from __future__ import annotations

import hmac
import logging

from flask import Blueprint, current_app, jsonify, request

from models.db import db
from models.delivery_reports import record_delivery_report

log = logging.getLogger(__name__)
blueprint = Blueprint("callbacks", __name__)

REPORT_FIELDS = ("id", "status", "phoneNumber", "networkCode", "failureReason", "retryCount")


@blueprint.post("/callbacks/africastalking/delivery")
def delivery_report():
    """Apply a delivery report. The shared secret comes as `?key=`; unknown message ids
    answer 200 (and are kept) so the gateway stops retrying them."""
    secret = current_app.config["SETTINGS"].at_callback_secret
    given = request.args.get("key", "")
    if not secret or not hmac.compare_digest(given.encode(), secret.encode()):
        return jsonify({"error": "forbidden"}), 403
    # PostgreSQL text cannot hold NUL; the gateway never sends one, a forger might.
    form = {
        name: request.form[name][:200].replace("\x00", "")
        for name in REPORT_FIELDS
        if name in request.form
    }
    if not form.get("id") or not form.get("status"):
        return jsonify({"error": "id and status are required"}), 400
    notification = record_delivery_report(db.session, form=form)
    db.session.commit()
    if notification is None:
        log.warning("delivery report for unknown message id %s (%s)", form["id"], form["status"])
    return jsonify({"status": "ok"})
