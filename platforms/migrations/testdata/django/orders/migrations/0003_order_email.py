from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [('orders', '0002_order_status')]

    operations = [
        migrations.AddField(
            model_name='order',
            name='email',
            field=models.EmailField(blank=True, max_length=254),
        ),
        migrations.RunSQL(
            "CREATE INDEX orders_order_email_idx ON orders_order (email)",
            reverse_sql="DROP INDEX orders_order_email_idx",
        ),
    ]
