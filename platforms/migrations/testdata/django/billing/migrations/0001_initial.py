from django.db import migrations, models


class Migration(migrations.Migration):

    initial = True

    dependencies = [('orders', '0003_order_email')]

    operations = [
        migrations.CreateModel(
            name='Invoice',
            fields=[
                ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                ('total', models.DecimalField(decimal_places=2, max_digits=12)),
            ],
        ),
    ]
