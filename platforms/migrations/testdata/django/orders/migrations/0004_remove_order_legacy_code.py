from django.db import migrations


def copy_codes(apps, schema_editor):
    # "RemoveField(" in a comment or a string is not an operation.
    Order = apps.get_model('orders', 'Order')
    Order.objects.filter(legacy_code='').update(status='legacy')


class Migration(migrations.Migration):

    dependencies = [('orders', '0003_order_email')]

    operations = [
        migrations.RunPython(copy_codes),
        migrations.RemoveField(
            model_name='order',
            name='legacy_code',
        ),
    ]
