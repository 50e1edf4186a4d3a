"""From a recipe file to components: recipe validation, the plugin registry, component building, memory
checks, config documentation. Imports training and the layers below it.
"""
