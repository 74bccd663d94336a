"""The only code that talks to MongoDB: collection specs, filters, pagination, documents in and out."""
