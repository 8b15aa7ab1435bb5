"""The plugin as QGIS loads it: menu and toolbar entries, the dock, the options page, the provider."""

from __future__ import annotations

from qgis.core import QgsApplication


def test_init_gui_adds_the_panel_menu_toolbar_options_page_and_provider(plugin, iface):
    menu = iface.plugin_menus["&rs-vlm"]
    assert [a.text() for a in menu.actions()] == ["rs-vlm panel", "rs-vlm settings...", "Set up rs-vlm..."]
    assert plugin.actions[0] in iface.raster_toolbar.actions()
    assert [f.title() for f in iface.options_factories] == ["rs-vlm"]
    assert QgsApplication.processingRegistry().providerById("rsvlm") is plugin.provider
    # the toolbar/menu action shows and hides the dock
    show = plugin.actions[0]
    show.setChecked(False)
    assert not plugin.panel.isVisible()
    iface.window.show()
    show.setChecked(True)
    assert plugin.panel.isVisible()
    show.setChecked(False)
    iface.window.hide()


def test_the_options_page_saves_the_settings(plugin, iface, tmp_path):
    from qgis.core import QgsSettings
    from qgis.PyQt.QtWidgets import QWidget

    parent = QWidget()  # stands for QGIS's options dialog, which owns the page
    page = iface.options_factories[0].createWidget(parent)
    page.widget.device.setCurrentText("cpu")
    page.widget.output.setFilePath(str(tmp_path))
    page.widget.clip.model.setText("remoteclip-vit-b-32")
    page.apply()
    try:
        s = QgsSettings()
        assert s.value("rs_vlm/device") == "cpu"
        assert s.value("rs_vlm/output_dir") == str(tmp_path)
        assert s.value("rs_vlm/clip/model") == "remoteclip-vit-b-32"
        assert "remoteclip-vit-b-32" in plugin.panel.worker_label.text()  # the panel follows
    finally:
        for key in ("device", "output_dir", "clip/model", "clip/arch", "clip/config", "caption/model",
                    "caption/arch", "caption/config", "grid"):
            QgsSettings().remove(f"rs_vlm/{key}")
        parent.deleteLater()
