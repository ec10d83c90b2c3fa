class CreateUsers < ActiveRecord::Migration[7.1]
  def change
    create_table :users do |t|
      t.string :name, null: false
      t.text :legacy_notes
      t.timestamps
    end
  end
end
