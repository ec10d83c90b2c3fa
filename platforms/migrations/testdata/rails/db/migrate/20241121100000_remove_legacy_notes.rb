class RemoveLegacyNotes < ActiveRecord::Migration[7.1]
  def up
    remove_column :users, :legacy_notes
    execute <<~SQL
      DELETE FROM orders WHERE status = 'test'
    SQL
  end

  def down
    raise ActiveRecord::IrreversibleMigration
  end
end
