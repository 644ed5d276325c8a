# Vendored from Django 5.2.19 (tests/cache/); BSD-3-Clause, see ../LICENSE.
